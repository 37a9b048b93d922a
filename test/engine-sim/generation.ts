import type { ServerResponse } from "node:http";
import { FAULT_MESSAGE, type Fault } from "./faults.js";
import { RequestError, type GenerationRequest } from "./request.js";
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
import type { SequenceListener, StepLoop } from "./step-loop.js";
import { blockHashes, generatedText, generatedToken } from "./tokens.js";

/** One generation to play: the parsed request, its length, and the fault to inject, if any. */
export interface GenerationPlan {
  /** Names the request's sequences on the engine (one per choice). */
  readonly id: string;
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
  /** Prompt tokens the engine's prefix cache served, over every choice. */
  cachedTokens: number;
  /** Set when a fault made the response carry an error (in-stream error event or 500 body). */
  failed: boolean;
}

/**
 * Plays one generation on `res` as the engine's steps produce it: each choice is one sequence on
 * the engine, and each token it produces goes out as the step that made it ends. Rejects with
 * the abort reason when `signal` aborts (client gone, simulator closing); the caller then
 * destroys the response. Refuses (RequestError 400, nothing sent) a prompt the engine could never hold.
 */
export async function generate(
  plan: GenerationPlan,
  res: ServerResponse,
  engine: StepLoop,
  signal: AbortSignal,
  outcome: GenerationOutcome,
): Promise<void> {
  const { fault, outputTokens, request } = plan;
  for (const prompt of request.prompts) {
    if (!engine.fits(prompt.length + outputTokens)) {
      const param = request.endpoint === "chat" ? "messages" : "prompt";
      throw new RequestError(400, `${prompt.length + outputTokens} tokens (${prompt.length} in the prompt, ${outputTokens} to generate) do not fit the engine's KV cache`, param);
    }
  }
  const output = request.stream ? new StreamOutput(plan, res) : new BodyOutput(plan, res);
  if (fault?.kind === "hang") return untilAborted(signal);
  // A fault after N tokens fires when token N+1 would be sent, at the latest one decode step
  // after the last token: before the end of stream, so the response never completes.
  const timed = fault !== undefined ? { fault, at: Math.min(fault.afterTokens, outputTokens) } : undefined;
  const sequences = request.prompts.map((prompt, choice) => ({
    id: `${plan.id}/${choice}`,
    promptTokens: prompt.length,
    blockHashes: engine.model.prefixCaching ? blockHashes(prompt, engine.model.blockSize) : [],
    outputTokens: timed === undefined ? outputTokens : timed.at + 1,
  }));
  signal.throwIfAborted();
  await new Promise<void>((resolve, reject) => {
    const produced = sequences.map(() => 0);
    let unfinished = sequences.length;
    const leave = (): void => {
      signal.removeEventListener("abort", onAbort);
      for (const sequence of sequences) engine.abort(sequence.id);
    };
    const onAbort = (): void => {
      leave();
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
    const listenerOf = (choice: number): SequenceListener => ({
      admitted: (cachedTokens) => {
        outcome.cachedTokens += cachedTokens;
      },
      tokens: (count) => {
        for (let k = 0; k < count; k++) {
          const step = produced[choice]!;
          if (timed?.at === step) {
            leave();
            playFault(timed.fault, res, output, outcome);
            resolve();
            return;
          }
          output.token(choice, step);
          produced[choice] = step + 1;
        }
      },
      finished: () => {
        unfinished -= 1;
        if (unfinished > 0) return;
        leave();
        outcome.usage = output.usage;
        output.finish();
        resolve();
      },
    });
    engine.add(sequences.map((request, choice) => ({ request, listener: listenerOf(choice) })));
  });
}

function playFault(
  fault: Extract<Fault, { afterTokens: number }>,
  res: ServerResponse,
  output: Output,
  outcome: GenerationOutcome,
): void {
  if (fault.kind === "reset") {
    // Tokens written in this tick stay corked until Node's own next-tick flush, queued before
    // this one: a reset must not take back the tokens already sent.
    process.nextTick(() => res.destroy());
    return;
  }
  outcome.failed = true;
  output.fail(FAULT_MESSAGE);
}

/** Resolves never; rejects with the abort reason once `signal` aborts. Holds no timer. */
function untilAborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    signal.throwIfAborted();
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
}

/** How a generation reaches the client: streamed token by token, or as one body at the end. */
interface Output {
  readonly usage: Usage;
  /** Emits token `step` (0-based) of one choice. */
  token(choice: number, step: number): void;
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
    const { endpoint, model, prompts } = plan.request;
    this.envelope = newEnvelope(endpoint, model);
    const promptTokens = prompts.reduce((total, prompt) => total + prompt.length, 0);
    this.usage = usageOf(promptTokens, plan.outputTokens * prompts.length);
  }
}

class StreamOutput extends BaseOutput implements Output {
  constructor(plan: GenerationPlan, res: ServerResponse) {
    super(plan, res);
    // Like vLLM (Starlette's StreamingResponse), headers go out before the first token.
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" });
    res.flushHeaders();
  }

  token(choice: number, step: number): void {
    const { endpoint } = this.plan.request;
    const last = step === this.plan.outputTokens - 1;
    if (step === 0 && endpoint === "chat") this.send(roleChunk(this.envelope, choice));
    this.send(tokenChunk(endpoint, this.envelope, choice, generatedToken(step), last ? this.plan.finishReason : null));
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
    const { endpoint, prompts } = this.plan.request;
    const texts = prompts.map(() => generatedText(this.plan.outputTokens));
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
