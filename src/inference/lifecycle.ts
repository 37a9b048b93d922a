import type { Logger } from "../log.js";
import type { HealthReporter } from "../pools/health.js";
import type { Awaitable, LoadStore, Outcome } from "../load/store.js";
import type { Picker } from "../scheduling/picker.js";
import type { Refusal } from "./refusal.js";
import { bodilessRequest, parseInferenceRequest, type ParseResult } from "./request.js";
import { scannerFor, type ResponseProgress, type ResponseScanner } from "./response.js";
import type { TokenCounter } from "./tokens.js";

/** Header that names the model instead of the body's `model` (GIE convention). */
export const MODEL_REWRITE_HEADER = "x-gateway-model-name-rewrite";

/** The request as the inference layer needs it; the transport fills it in. */
export interface RequestView {
  path: string;
  header(name: string): string | undefined;
  /** Whole body; undefined when the request has none. */
  body: Buffer | undefined;
  /** False when the body exists but is not shown to us before the pick (headers-only modes). */
  bodySeen: boolean;
  /** The gateway's subset hint (`ip:port` list) when it sent one. */
  subset: readonly string[] | undefined;
  /** Observer role: the engine an earlier filter routed the request to, if any. */
  routedTo: string | undefined;
}

/** `fallbacks`: next-best engines, in order, for the gateway's retries. `observe`: leave the routing as it is. */
export type Decision =
  | { kind: "route"; engine: string; fallbacks: string[] }
  | { kind: "observe" }
  | { kind: "refuse"; refusal: Refusal };

export interface LifecycleContext {
  store: LoadStore;
  picker: Picker;
  /** picker: choose and route; observer: count the load on the engine chosen elsewhere. */
  role: "picker" | "observer";
  tokens: TokenCounter;
  /** Told whether the engine answered: a 5xx or no response at all counts against it. */
  health: HealthReporter;
  log: Logger;
  /** Largest plain JSON response kept to read its `usage`. */
  maxJsonResponseBytes: number;
}

/**
 * One inference exchange from pick to release. Every path that ends the exchange goes
 * through `finish`, which releases the reservation exactly once; store operations are
 * applied in order even when the store answers asynchronously.
 */
export class InferenceExchange {
  private reserved: { pool: string; engine: string } | undefined;
  /** Set once, when the exchange ends; the reservation is released with it. */
  private outcome: Outcome | undefined;
  private firstTokenAt: number | undefined;
  private scanner: ResponseScanner | undefined;
  private status = 0;
  private model: string | undefined;
  private promptTokens = 0;
  private generated = 0;
  private readonly startedAt = performance.now();
  private chain: Promise<unknown> | undefined;

  private requestId: string | undefined;

  constructor(
    private readonly context: LifecycleContext,
    readonly id: string,
  ) {}

  async decide(request: RequestView): Promise<Decision> {
    this.requestId = request.header("x-request-id");
    const parsed: ParseResult = request.bodySeen
      ? parseInferenceRequest(request.path, request.body)
      : { ok: true, request: bodilessRequest() };
    if (!parsed.ok) {
      // An observer refuses nothing: the request is the engine's to judge.
      if (this.context.role === "observer") return { kind: "observe" };
      return { kind: "refuse", refusal: { status: 400, code: "invalid_request", message: parsed.message } };
    }
    const { texts, tokenIds, messages } = parsed.request;
    this.model = request.header(MODEL_REWRITE_HEADER) || parsed.request.model;
    // Chat templates add about three tokens per message and three to prime the reply.
    const templateTokens = messages > 0 ? messages * 3 + 3 : 0;
    this.promptTokens = this.context.tokens.count(texts.join("\n")) + tokenIds + templateTokens;
    if (this.context.role === "observer") return this.observe(request.routedTo);
    const result = await this.context.picker.pick({ id: this.id, model: this.model, promptTokens: this.promptTokens, subset: request.subset });
    switch (result.kind) {
      case "no_pool":
        return { kind: "refuse", refusal: { status: 404, code: "model_not_found", message: `no pool serves model '${this.model ?? ""}'` } };
      case "no_engine":
        return { kind: "refuse", refusal: { status: 503, code: "no_engine_available", message: `pool '${result.pool}' has no engine available` } };
      case "outside_subset":
        return {
          kind: "refuse",
          refusal: { status: 503, code: "no_engine_available", message: `no engine of pool '${result.pool}' is in the gateway's subset hint` },
        };
      case "saturated":
        return {
          kind: "refuse",
          refusal: {
            status: 429,
            code: "rate_limit_exceeded",
            message: `every engine of pool '${result.pool}' is at its limit of ${result.limit} requests; retry later`,
          },
        };
      case "picked":
        this.reserved = { pool: result.reservation.pool, engine: result.reservation.engine };
        // The stream may have ended while the store answered: release at once.
        if (this.outcome !== undefined) this.release(this.outcome);
        return { kind: "route", engine: result.reservation.engine, fallbacks: result.fallbacks };
    }
  }

  /** `servedBy`: the engine the gateway reports it actually sent the request to, if it says. */
  /** Counts the load on the engine an earlier filter chose; without one there is nothing to count. */
  private async observe(engine: string | undefined): Promise<Decision> {
    if (engine === undefined) return { kind: "observe" };
    const reservation = await this.context.picker.adopt({ id: this.id, model: this.model, promptTokens: this.promptTokens, engine });
    if (reservation !== undefined) {
      this.reserved = { pool: reservation.pool, engine: reservation.engine };
      if (this.outcome !== undefined) this.release(this.outcome);
    }
    return { kind: "observe" };
  }

  responseHeaders(status: number, contentType: string | undefined, servedBy?: string): void {
    if (this.outcome !== undefined) return;
    this.status = status;
    const reserved = this.reserved;
    if (reserved !== undefined && servedBy !== undefined && servedBy !== reserved.engine) {
      // A retry went to a fallback: the load is that engine's from now on.
      reserved.engine = servedBy;
      this.apply(() => this.context.store.move(this.id, servedBy));
    }
    if (reserved !== undefined) {
      if (status >= 500) this.context.health.failed(reserved.engine);
      else this.context.health.succeeded(reserved.engine);
    }
    if (status >= 400) {
      this.finish("upstream_error");
      return;
    }
    this.scanner = scannerFor(contentType, this.context.maxJsonResponseBytes);
  }

  responseBody(chunk: Uint8Array): void {
    if (this.outcome !== undefined || this.scanner === undefined || chunk.length === 0) return;
    if (this.firstTokenAt === undefined) {
      this.firstTokenAt = performance.now();
      this.apply(() => this.context.store.firstToken(this.id));
    }
    this.record(this.scanner.push(chunk));
  }

  /** The response reached its end of stream. */
  responseEnd(): void {
    if (this.outcome !== undefined) return;
    if (this.scanner !== undefined) this.record(this.scanner.end());
    this.finish(this.status >= 400 ? "upstream_error" : "ok");
  }

  /** The stream ended early: reset, cancel, or no response phase at all (a local reply). */
  abort(outcome: Outcome): void {
    // No response phase: the engine was unreachable or reset the request before answering.
    if (outcome === "no_response" && this.outcome === undefined && this.reserved !== undefined) this.context.health.failed(this.reserved.engine);
    this.finish(outcome);
  }

  private record(progress: ResponseProgress): void {
    if (progress.generated > 0) {
      this.generated += progress.generated;
      this.apply(() => this.context.store.addGenerated(this.id, progress.generated));
    }
    const usage = progress.usage;
    if (usage !== undefined) {
      this.generated = usage.completionTokens;
      this.apply(() => this.context.store.reconcile(this.id, usage));
    }
    if (progress.error !== undefined) this.finish("upstream_error");
  }

  private finish(outcome: Outcome): void {
    if (this.outcome !== undefined) return;
    this.outcome = outcome;
    this.release(outcome);
  }

  private release(outcome: Outcome): void {
    if (this.reserved === undefined) return;
    this.apply(() => this.context.store.release(this.id, outcome));
    this.context.log.info(
      {
        requestId: this.requestId,
        model: this.model,
        pool: this.reserved.pool,
        engine: this.reserved.engine,
        promptTokens: this.promptTokens,
        completionTokens: this.generated,
        ttftMs: this.firstTokenAt === undefined ? undefined : Math.round(this.firstTokenAt - this.startedAt),
        durationMs: Math.round(performance.now() - this.startedAt),
        status: this.status || undefined,
        outcome,
      },
      "request finished",
    );
  }

  /** Runs store operations in order; synchronous stores never touch a promise. */
  private apply(operation: () => Awaitable<unknown>): void {
    if (this.chain !== undefined) {
      this.chain = this.chain.then(operation).catch((error: unknown) => this.storeFailed(error));
      return;
    }
    try {
      const result = operation();
      if (result instanceof Promise) this.chain = result.catch((error: unknown) => this.storeFailed(error));
    } catch (error) {
      this.storeFailed(error);
    }
  }

  private storeFailed(error: unknown): void {
    this.context.log.error({ err: error, id: this.id }, "load store operation failed");
  }
}
