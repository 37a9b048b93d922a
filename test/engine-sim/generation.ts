import type { ServerResponse } from "node:http";
import { FAULT_MESSAGE, type Fault } from "./faults.js";
import type { GenerationRequest } from "./request.js";
import {
  completeBody,
  errorBody,
  newEnvelope,
  roleChunk,
  tokenChunk,
  usageChunk,
  usageOf,
  type Envelope,
  type FinishReason,
  type Usage,
} from "./responses.js";
import { EngineClock, untilAborted } from "./timing.js";
import { generatedText, generatedToken } from "./tokens.js";

/** One generation to play: the parsed request, its length, and the fault to inject, if any. */
export interface GenerationPlan {
  readonly request: GenerationRequest;
  /** Tokens generated per choice (>= 1). */
  readonly outputTokens: number;
  readonly finishReason: FinishReason;
  /** Faults played during generation; `status` faults are answered before getting here. */
  readonly fault: Exclude<Fault, { kind: "status" }> | undefined;
}

/**
 * What the response reported, filled in before the response is ended so that whoever watches
 * the response's `close` event can classify the exchange without racing the generator.
 */
export interface GenerationOutcome {
  /** Set when the response completed normally: the usage it reported (or would have). */
  usage: Usage | undefined;
  /** Set when a fault made the response carry an error (in-stream error event or 500 body). */
  failed: boolean;
}

/**
 * Plays one generation on `res` following the engine's clock. Rejects with the abort reason when
 * `signal` aborts (client gone, simulator closing); the caller then destroys the response.
 */
export async function generate(
  plan: GenerationPlan,
  res: ServerResponse,
  clock: EngineClock,
  signal: AbortSignal,
  outcome: GenerationOutcome,
): Promise<void> {
  const output = plan.request.stream ? new StreamOutput(plan, res) : new BodyOutput(plan, res);
  const { fault, outputTokens } = plan;
  // A fault after N tokens fires when token N+1 would be sent, at the latest one decode step
  // after the last token: before the end of stream, so the response never completes.
  const timed =
    fault !== undefined && fault.kind !== "hang"
      ? { fault, at: Math.min(fault.afterTokens, outputTokens) }
      : undefined;

  await clock.enter(signal);
  try {
    if (fault?.kind === "hang") await untilAborted(signal);
    await clock.prefill(sum(plan.request.promptTokens), signal);
    for (let step = 0; step < outputTokens; step++) {
      if (step > 0) await clock.decodeStep(signal);
      if (timed?.at === step) return playFault(timed.fault, res, output, outcome);
      output.token(step);
    }
    if (timed !== undefined) {
      await clock.decodeStep(signal);
      return playFault(timed.fault, res, output, outcome);
    }
    outcome.usage = output.usage;
    output.finish();
  } finally {
    clock.leave();
  }
}

function playFault(
  fault: Extract<Fault, { afterTokens: number }>,
  res: ServerResponse,
  output: Output,
  outcome: GenerationOutcome,
): void {
  if (fault.kind === "reset") {
    res.destroy();
    return;
  }
  outcome.failed = true;
  output.fail(FAULT_MESSAGE);
}

function sum(values: readonly number[]): number {
  return values.reduce((total, value) => total + value, 0);
}

/** How a generation reaches the client: streamed token by token, or as one body at the end. */
interface Output {
  readonly usage: Usage;
  /** Emits the token at `step` for every choice. */
  token(step: number): void;
  finish(): void;
  fail(message: string): void;
}

abstract class BaseOutput {
  protected readonly envelope: Envelope;
  readonly usage: Usage;

  constructor(
    protected readonly plan: GenerationPlan,
    protected readonly res: ServerResponse,
  ) {
    const { endpoint, model, promptTokens } = plan.request;
    this.envelope = newEnvelope(endpoint, model);
    this.usage = usageOf(sum(promptTokens), plan.outputTokens * promptTokens.length);
  }
}

class StreamOutput extends BaseOutput implements Output {
  constructor(plan: GenerationPlan, res: ServerResponse) {
    super(plan, res);
    // Like vLLM (Starlette's StreamingResponse), headers go out before the first token.
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" });
    res.flushHeaders();
  }

  token(step: number): void {
    const { endpoint, promptTokens } = this.plan.request;
    const last = step === this.plan.outputTokens - 1;
    const text = generatedToken(step);
    for (let index = 0; index < promptTokens.length; index++) {
      if (step === 0 && endpoint === "chat") this.send(roleChunk(this.envelope, index));
      this.send(tokenChunk(endpoint, this.envelope, index, text, last ? this.plan.finishReason : null));
    }
  }

  finish(): void {
    if (this.plan.request.includeUsage) this.send(usageChunk(this.plan.request.endpoint, this.envelope, this.usage));
    this.res.end("data: [DONE]\n\n");
  }

  fail(message: string): void {
    // vLLM reports errors raised mid-generation as a data event, then still ends with [DONE].
    this.send(errorBody(500, message));
    this.res.end("data: [DONE]\n\n");
  }

  private send(event: object): void {
    this.res.write(`data: ${JSON.stringify(event)}\n\n`);
  }
}

class BodyOutput extends BaseOutput implements Output {
  token(): void {
    // The body is written whole at the end.
  }

  finish(): void {
    const { endpoint, promptTokens } = this.plan.request;
    const texts = promptTokens.map(() => generatedText(this.plan.outputTokens));
    sendJson(this.res, 200, completeBody(endpoint, this.envelope, texts, this.plan.finishReason, this.usage));
  }

  fail(message: string): void {
    sendJson(this.res, 500, errorBody(500, message));
  }
}

export function sendJson(res: ServerResponse, status: number, body: object): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}
