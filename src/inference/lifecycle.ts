import { isEngineAddress } from "../config/schema.js";
import type { Logger } from "../log.js";
import type { Awaitable, LoadStore, Outcome, ReportedUsage } from "../load/store.js";
import type { HealthReporter } from "../pools/health.js";
import type { Picker } from "../scheduling/picker.js";
import type { Refusal, RefusalReason } from "./refusal.js";
import { bodilessRequest, type ParseResult } from "./request.js";
import type { RequestParser } from "./request-parser.js";
import { scannerFor, type ResponseProgress, type ResponseScanner } from "./response.js";
import type { TokenizerRegistry } from "./tokenizers/registry.js";

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
  /** Observer role: the engine an earlier picker chose (routing header, else `envoy.lb` metadata). */
  chosenEngine: string | undefined;
  /** The gateway's subset hint (`ip:port` list) when it sent one. */
  subset: readonly string[] | undefined;
}

/**
 * route: send to this engine (`body`, when set, replaces the request body; the transport fixes
 * its length); observe: let the request through unchanged; refuse: answer it here.
 */
export type Decision =
  | { kind: "route"; engine: string; fallbacks: string[]; body?: Buffer }
  | { kind: "observe" }
  | { kind: "refuse"; refusal: Refusal };

export type { RefusalReason };

/** What happened to an exchange, once per event (never per body chunk), for metrics. */
export interface ExchangeEvents {
  picked(pool: string, engine: string, promptTokens: number): void;
  refused(reason: RefusalReason, pool: string | undefined): void;
  /** Seconds from the request reaching the sidecar to the first token. */
  firstToken(seconds: number): void;
  /** Seconds from the request reaching the sidecar to the release of its reservation. */
  finished(seconds: number, outcome: Outcome): void;
}

export interface LifecycleContext {
  store: LoadStore;
  picker: Picker;
  /** Parses request bodies, large ones off the event loop. */
  parser: RequestParser;
  tokens: TokenizerRegistry;
  /** Told whether the engine answered: a 5xx or no response at all counts against it. */
  health: HealthReporter;
  log: Logger;
  /** Largest plain JSON response kept to read its `usage`. */
  maxJsonResponseBytes: number;
  /** Ask streaming engines for `usage` when the client did not, so counts reconcile. */
  forceIncludeUsage: boolean;
  events: ExchangeEvents;
  /**
   * Observer role: the pool an engine chosen elsewhere is counted under (the model's pool, or
   * the pool listing that engine), or undefined when this sidecar is the picker.
   */
  observe: ((engine: string, model: string | undefined) => string) | undefined;
}

/** Runs `then` on a value that may still be on its way. */
function settle<T>(value: Awaitable<T>, then: (result: T) => void): Awaitable<void> {
  return value instanceof Promise ? value.then(then) : then(value);
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
  /** The engine's own `usage`, when it sent one. */
  private reported: ReportedUsage | undefined;
  private readonly startedAt = performance.now();
  private chain: Promise<unknown> | undefined;

  private requestId: string | undefined;
  /** The pool a refusal concerned, for the refusal's metric label. */
  private refusedPool: string | undefined;

  constructor(
    private readonly context: LifecycleContext,
    readonly id: string,
  ) {}

  async decide(request: RequestView): Promise<Decision> {
    this.requestId = request.header("x-request-id");
    let parsed: ParseResult = { ok: true, request: bodilessRequest() };
    if (request.bodySeen) {
      const parsing = this.context.parser.parse(request.path, request.body);
      parsed = parsing instanceof Promise ? await parsing : parsing;
    }
    if (!parsed.ok) return this.refuse({ status: 400, code: "invalid_request", message: parsed.message }, undefined);
    this.model = request.header(MODEL_REWRITE_HEADER) || parsed.request.model;
    const priced = this.context.tokens.forModel(this.model).promptTokens(parsed.request);
    // A tokenizer in a worker thread answers later. Should the stream end meanwhile, the reservation
    // made below is released as soon as it is made, as when it ends while the store answers.
    this.promptTokens = typeof priced === "number" ? priced : await priced;
    if (this.context.observe !== undefined) return this.observe(request.chosenEngine, this.context.observe);
    const result = await this.context.picker.pick({ id: this.id, model: this.model, promptTokens: this.promptTokens, subset: request.subset });
    switch (result.kind) {
      case "no_pool":
        return this.refuse({ status: 404, code: "model_not_found", message: `no pool serves model '${this.model ?? ""}'` }, undefined);
      case "no_engine":
        return this.refuse({ status: 503, code: "no_engine_available", message: `pool '${result.pool}' has no engine available` }, result.pool);
      case "outside_subset":
        return this.refuse(
          { status: 503, code: "no_engine_available", message: `no engine of pool '${result.pool}' is in the gateway's subset hint` },
          result.pool,
        );
      case "saturated":
        return this.refuse(
          {
            status: 429,
            code: "rate_limit_exceeded",
            message: `every engine of pool '${result.pool}' is at its limit of ${result.limit} requests; retry later`,
          },
          result.pool,
        );
      case "picked":
        this.reservedOn(result.reservation.pool, result.reservation.engine);
        if (this.context.forceIncludeUsage && parsed.request.withUsage !== undefined) {
          return { kind: "route", engine: result.reservation.engine, fallbacks: result.fallbacks, body: parsed.request.withUsage() };
        }
        return { kind: "route", engine: result.reservation.engine, fallbacks: result.fallbacks };
    }
  }

  /**
   * Track an exchange routed by someone else. Without a usable engine (no header, not a literal
   * ip:port) nothing is counted: a guess would put load on the wrong engine.
   */
  private async observe(engine: string | undefined, poolFor: (engine: string, model: string | undefined) => string): Promise<Decision> {
    if (engine === undefined || !isEngineAddress(engine)) return { kind: "observe" };
    const pool = poolFor(engine, this.model);
    if (await this.context.store.reserve({ id: this.id, pool, engine, promptTokens: this.promptTokens })) this.reservedOn(pool, engine);
    return { kind: "observe" };
  }

  /** The store holds the reservation now. The stream may have ended meanwhile: then it is released at once. */
  private reservedOn(pool: string, engine: string): void {
    this.reserved = { pool, engine };
    this.context.events.picked(pool, engine, this.promptTokens);
    if (this.outcome !== undefined) this.release(this.outcome);
  }

  private refuse(refusal: Refusal, pool: string | undefined): Decision {
    this.refusedPool = pool;
    return { kind: "refuse", refusal };
  }

  /** `servedBy`: the engine the gateway reports it actually sent the request to, if it says. */
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

  /** The transport answered the request itself; nothing was reserved. One log line, like a finished request. */
  refused(refusal: Refusal, requestId: string | undefined): void {
    this.context.events.refused(refusal.code, this.refusedPool);
    this.context.log.info(
      {
        requestId: requestId ?? this.requestId,
        model: this.model,
        status: refusal.status,
        reason: refusal.code,
        message: refusal.message,
        durationMs: Math.round(performance.now() - this.startedAt),
        outcome: "refused",
      },
      "request refused",
    );
  }

  private record(progress: ResponseProgress): void {
    // Before the generated tokens: prefill ends, then the output is held.
    if (progress.firstToken === true && this.firstTokenAt === undefined) {
      this.firstTokenAt = performance.now();
      this.apply(() => this.context.store.firstToken(this.id));
      this.context.events.firstToken((this.firstTokenAt - this.startedAt) / 1000);
    }
    if (progress.generated > 0) {
      this.generated += progress.generated;
      this.apply(() => this.context.store.addGenerated(this.id, progress.generated));
    }
    const usage = progress.usage;
    if (usage !== undefined) {
      this.generated = usage.completionTokens;
      this.reported = usage;
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
    const { pool, engine } = this.reserved;
    // Not released means the TTL sweep expired it first; that sweep logged it.
    this.apply(() => settle(this.context.store.release(this.id, outcome), (released) => released && this.logFinished(pool, engine, outcome)));
  }

  private logFinished(pool: string, engine: string, outcome: Outcome): void {
    this.context.events.finished((performance.now() - this.startedAt) / 1000, outcome);
    this.context.log.info(
      {
        requestId: this.requestId,
        model: this.model,
        pool,
        engine,
        promptTokens: this.promptTokens,
        reportedPromptTokens: this.reported?.promptTokens,
        cachedTokens: this.reported?.cachedTokens,
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
