import { isEngineAddress } from "../config/schema.js";
import type { Logger } from "../log.js";
import { andThen, type Awaitable, type LoadStore, type Outcome, type ReportedUsage } from "../load/store.js";
import type { HealthReporter } from "../pools/health.js";
import { saturationLimit, type Forecast } from "../scheduling/picker.js";
import type { QueuedPickResult, Scheduler } from "../scheduling/queue.js";
import { apiRoute, defaultApi, type ApiAdapter, type ApiRoute } from "./apis/index.js";
import { blockTokens, promptBlocks } from "./prompt-blocks.js";
import type { Refusal, RefusalReason } from "./refusal.js";
import { bodilessRequest, type InferenceRequest, type ParseResult } from "./request.js";
import type { RequestParser } from "./request-parser.js";
import type { ResponseProgress, ResponseScanner } from "./response.js";
import { approximateTokens } from "./estimate.js";
import { outputTokens } from "./tokens.js";
import type { TokenizerRegistry } from "./tokenizers/registry.js";

/** The request as the inference layer needs it; the transport fills it in. */
export interface RequestView {
  path: string;
  header(name: string): string | undefined;
  /** The model named by a trusted routing input (the GIE model-rewrite header, when the config trusts it); it wins over the body's. */
  modelOverride: string | undefined;
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
  /** A non-streaming request's prefill was taken as over at its predicted first token (its engine may take another now). */
  prefillEstimated(): void;
  /** Seconds from the request reaching the sidecar to the release of its reservation. */
  finished(seconds: number, outcome: Outcome): void;
}

export interface LifecycleContext {
  store: LoadStore;
  /** Picks the engine: the Picker, through the queue when one is configured. */
  picker: Scheduler;
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
  /** Told of each stretch of streamed output, by the engine it came from: the engines' step rhythm (scheduling/engine-steps.ts). */
  steps: { seen(engine: string): void };
  /**
   * Observer role: the pool an engine chosen elsewhere is counted under (the model's pool, or
   * the pool listing that engine), or undefined when this sidecar is the picker.
   */
  observe: ((engine: string, model: string | undefined) => string) | undefined;
}

/** The longest a non-streaming request is held in prefill by its predicted first token; past it, until its body comes. */
const MAX_ESTIMATED_PREFILL_MS = 60_000;

/**
 * The named states of one exchange. `receiving`: the request is arriving, nothing decided;
 * `deciding`: parse, price and pick under way; `picked`: routed (reserved, unless observed without
 * an engine), no response yet; `responding`: the engine answered, first token not yet seen;
 * `streaming`: first token seen; `ended`: terminal, with an outcome.
 */
export type ExchangeState = "receiving" | "deciding" | "picked" | "responding" | "streaming" | "ended";

/** How an exchange ended: a reservation's outcome, or refused (answered by the sidecar, nothing reserved). */
export type ExchangeOutcome = Outcome | "refused";

/** The only moves there are; `ended` is reachable from every other state, and from nowhere else does anything follow. */
const TRANSITIONS: Record<ExchangeState, readonly ExchangeState[]> = {
  receiving: ["deciding", "ended"],
  deciding: ["picked", "ended"],
  picked: ["responding", "ended"],
  responding: ["streaming", "ended"],
  streaming: ["ended"],
  ended: [],
};

/** A move the state machine does not have: a defect of the caller, which fails that exchange alone. */
export class LifecycleError extends Error {
  override readonly name = "LifecycleError";
}

const asError = (value: unknown): Error => (value instanceof Error ? value : new Error(String(value)));

/**
 * One inference exchange from request to release, as a state machine: `enter` is the one place
 * where the state changes, and `end` the one way into `ended`, which releases the reservation
 * exactly once. Every effect — store calls, metrics, health reports, logs — runs through `effect`
 * or `safely`, which route any throw or rejection to `fail`: that exchange ends (outcome
 * `internal_error`, its reservation released once, one log line naming the cause) and the
 * transport is told, so it can end the stream; nothing escapes to the process.
 */
export class InferenceExchange {
  private state: ExchangeState = "receiving";
  private outcome: ExchangeOutcome | undefined;
  private reserved: { pool: string; engine: string } | undefined;
  /** Set when the release is issued: it is issued once. */
  private releasing = false;
  private firstTokenAt: number | undefined;
  /** The request's API shape, chosen once from its path: it parses the body, scans the response and writes refusals. */
  private route: ApiRoute | undefined;
  private scanner: ResponseScanner | undefined;
  private status = 0;
  private model: string | undefined;
  private promptTokens = 0;
  /** The prompt's full count, when the pick had a sample's price: taken once the routing reply is out. */
  private countLater: (() => number | Promise<number>) | undefined;
  private generated = 0;
  /** The engine's own `usage`, when it sent one. */
  private reported: ReportedUsage | undefined;
  /** The engine was asked for its `usage` at the stream's end: streamed output is only estimated meanwhile. */
  private usageComing = false;
  /** The engine sent a `usage` that was not a sane count: warned about once per exchange. */
  private usageRejected = false;
  private readonly startedAt = performance.now();
  /** The TTFT predicted at the pick, told the first token's time since. */
  private forecast: { of: Forecast; pickedAt: number } | undefined;
  /** A non-streaming request's prefill ends at its predicted first token: its response shows none before its end. */
  private prefillEstimate: NodeJS.Timeout | undefined;
  /** Store operations, applied in order; undefined while none is pending. */
  private chain: Promise<unknown> | undefined;
  /** Why the exchange failed (outcome internal_error), or why its release failed. */
  private failure: Error | undefined;
  private failureListener: ((cause: Error) => void) | undefined;
  private settledPromise: Promise<void> | undefined;
  private settleDone: (() => void) | undefined;

  /** Aborted when the exchange ends: a request held in the queue is dropped then. */
  private readonly ended = new AbortController();
  private requestId: string | undefined;
  /** The pool a refusal concerned, for the refusal's metric label. */
  private refusedPool: string | undefined;

  constructor(
    private readonly context: LifecycleContext,
    readonly id: string,
  ) {}

  /** Where the exchange is now. */
  get current(): ExchangeState {
    return this.state;
  }

  /** Told when the exchange fails from inside (a store call rejected, a metric threw): the transport ends the stream. */
  onFailure(listener: (cause: Error) => void): void {
    this.failureListener = listener;
  }

  /** Settles once the exchange has ended and its release (and its log line) are done. */
  settled(): Promise<void> {
    if (this.state === "ended" && this.chain === undefined) return Promise.resolve();
    this.settledPromise ??= new Promise((resolve) => (this.settleDone = resolve));
    return this.settledPromise;
  }

  /** The request's headers gave its path: its API shape is chosen from it, once (the decision uses it then). */
  requestPath(path: string): ApiRoute {
    return (this.route ??= apiRoute(path));
  }

  /** A refusal's body, in the shape the request's API answers errors in (OpenAI's before its path is known). */
  errorBody(refusal: Refusal, requestId: string | undefined): string {
    return this.api.errorBody(refusal, requestId ?? this.requestId);
  }

  private get api(): ApiAdapter {
    return this.route?.api ?? defaultApi;
  }

  /**
   * Parse, price and pick (or observe). Synchronous when each step answers at once (a body parsed
   * inline, o200k, the memory store): the routing reply then goes out before the transport reads
   * its next message, so no pick waits behind chunks that arrived with it. A throw or rejection
   * is this exchange's failure: the transport calls `fail`.
   */
  decide(request: RequestView): Awaitable<Decision> {
    this.enter("deciding");
    this.requestId = request.header("x-request-id");
    const route = this.requestPath(request.path);
    const parsed: Awaitable<ParseResult> = request.bodySeen ? this.context.parser.parse(route, request.body) : { ok: true, request: bodilessRequest() };
    return andThen(parsed, (result) => this.price(request, result));
  }

  private price(request: RequestView, parsed: ParseResult): Awaitable<Decision> {
    if (!parsed.ok) return this.refuse({ status: 400, code: "invalid_request", message: parsed.message }, undefined);
    this.model = request.modelOverride || parsed.request.model;
    this.usageComing = parsed.request.asksUsage;
    const priced = this.context.tokens.forModel(this.model).pickPrice(parsed.request);
    this.countLater = priced.exact;
    // A tokenizer in a worker thread answers later. Should the stream end meanwhile, the reservation
    // made below is released as soon as it is made, as when it ends while the store answers.
    return andThen(priced.tokens, (tokens) => {
      this.promptTokens = tokens;
      if (this.context.observe !== undefined) return this.observe(request.chosenEngine, this.context.observe);
      return this.pick(request, parsed.request);
    });
  }

  private pick(request: RequestView, parsed: InferenceRequest): Awaitable<Decision> {
    const { picker } = this.context;
    const prefix = picker.usesPrefix ? promptBlocks(parsed.texts) : undefined;
    const prefixBlockTokens = prefix === undefined ? undefined : blockTokens(parsed.texts, this.promptTokens);
    const priorityHint = picker.priorityHeader === undefined ? undefined : request.header(picker.priorityHeader);
    const bytes = request.body?.length ?? 0;
    const held = { priorityHint, bytes, signal: this.ended.signal };
    const picked = picker.pick({ id: this.id, requestId: this.requestId, model: this.model, promptTokens: this.promptTokens, subset: request.subset, prefix, prefixBlockTokens, ...held });
    return andThen(picked, (result) => this.decision(result, parsed));
  }

  private decision(result: QueuedPickResult, parsed: InferenceRequest): Decision {
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
            message: `every engine of pool '${result.pool}' is at its limit of ${saturationLimit(result)}; retry later`,
          },
          result.pool,
        );
      case "queue_full":
        return this.refuse(
          { status: 429, code: "rate_limit_exceeded", message: `every engine of pool '${result.pool}' is at its limit and the queue is full; retry later` },
          result.pool,
        );
      case "queue_timeout":
        return this.refuse(
          {
            status: 429,
            code: "rate_limit_exceeded",
            message: `every engine of pool '${result.pool}' stayed at its limit while the request waited ${Math.round(result.waitedMs)} ms; retry later`,
          },
          result.pool,
        );
      case "abandoned":
        // The exchange ended while its request waited: nobody reads this answer.
        return this.refuse({ status: 429, code: "rate_limit_exceeded", message: "the request ended while it waited for an engine" }, undefined);
      case "duplicate":
        // Ids are this sidecar's instance and a sequence number: never open twice unless something is broken.
        throw new Error(`ledger id ${this.id} is already open`);
      case "picked": {
        this.forecast = { of: result.forecast, pickedAt: performance.now() };
        this.reservedOn(result.reservation.pool, result.reservation.engine);
        if (!parsed.stream) this.estimatePrefillEnd(result.forecast.predictedMs);
        const body = this.context.forceIncludeUsage ? parsed.withUsageBody : undefined;
        if (body !== undefined) this.usageComing = true;
        return body === undefined
          ? { kind: "route", engine: result.reservation.engine, fallbacks: result.fallbacks }
          : { kind: "route", engine: result.reservation.engine, fallbacks: result.fallbacks, body };
      }
    }
  }

  /**
   * Track an exchange routed by someone else. Without a usable engine (no header, not a literal
   * ip:port) nothing is counted: a guess would put load on the wrong engine.
   */
  private observe(engine: string | undefined, poolFor: (engine: string, model: string | undefined) => string): Awaitable<Decision> {
    if (engine === undefined || !isEngineAddress(engine)) {
      this.routed();
      return { kind: "observe" };
    }
    const pool = poolFor(engine, this.model);
    return andThen(this.context.store.reserve({ id: this.id, pool, engine, promptTokens: this.promptTokens }), (outcome): Decision => {
      if (outcome.kind === "reserved") this.reservedOn(pool, engine);
      else this.routed();
      return { kind: "observe" };
    });
  }

  /** The store holds the reservation now. The stream may have ended meanwhile: then it is released at once. */
  private reservedOn(pool: string, engine: string): void {
    this.reserved = { pool, engine };
    this.safely(() => this.context.events.picked(pool, engine, this.promptTokens));
    if (this.state === "ended") this.release();
    else {
      this.countAfterPick();
      this.routed();
    }
  }

  /**
   * A long prompt was priced from a small sample so that its pick waits for no tokenizer; its
   * full count follows the routing reply (setImmediate runs after the reply is written) and
   * corrects the reservation, unless the exchange ended or the engine's own usage came first.
   * (Pools counted in a worker thread count before the pick: registry.ts.) A count that rejects
   * leaves the pick's price.
   */
  private countAfterPick(): void {
    const count = this.countLater;
    if (count === undefined) return;
    this.countLater = undefined;
    setImmediate(() =>
      this.safely(() => {
        if (this.state === "ended" || this.reported !== undefined) return;
        const counted = count();
        if (typeof counted === "number") this.recounted(counted);
        else counted.then((tokens) => this.safely(() => this.recounted(tokens)), () => undefined);
      }),
    );
  }

  private recounted(tokens: number): void {
    if (this.state === "ended" || this.reported !== undefined || tokens === this.promptTokens) return;
    this.promptTokens = tokens;
    const usage: ReportedUsage = { promptTokens: tokens, completionTokens: this.generated };
    this.effect(() => this.context.store.reconcile(this.id, usage));
  }

  /**
   * A JSON body is sent whole when generation has ended, so its first byte would hold the request
   * "in prefill" for its whole life, and its engine's prefill counts with it. Prefill is taken as
   * over at the predicted first token instead (at most MAX_ESTIMATED_PREFILL_MS); the body's first
   * byte then changes nothing more, and nothing is learnt from either.
   */
  private estimatePrefillEnd(predictedMs: number): void {
    if (this.state === "ended" || !Number.isFinite(predictedMs)) return;
    const wait = Math.min(MAX_ESTIMATED_PREFILL_MS, Math.max(0, predictedMs));
    this.prefillEstimate = setTimeout(() => {
      this.prefillEstimate = undefined;
      if (this.state === "ended" || this.firstTokenAt !== undefined) return;
      this.effect(() => this.context.store.firstToken(this.id));
      this.safely(() => this.context.events.prefillEstimated());
    }, wait);
    this.prefillEstimate.unref();
  }

  private routed(): void {
    // Whatever was not reserved has no count to correct: the prompt is not kept for it.
    this.countLater = undefined;
    if (this.state === "deciding") this.enter("picked");
  }

  private refuse(refusal: Refusal, pool: string | undefined): Decision {
    this.refusedPool = pool;
    return { kind: "refuse", refusal };
  }

  /** `servedBy`: the engine the gateway reports it actually sent the request to, if it says. */
  responseHeaders(status: number, contentType: string | undefined, servedBy?: string): void {
    if (this.state === "ended") return;
    this.enter("responding");
    this.status = status;
    const reserved = this.reserved;
    if (reserved !== undefined && servedBy !== undefined && servedBy !== reserved.engine) {
      // A retry went to a fallback: the load is that engine's from now on.
      reserved.engine = servedBy;
      this.effect(() => this.context.store.move(this.id, servedBy));
    }
    if (reserved !== undefined) {
      const engine = reserved.engine;
      this.safely(() => (status >= 500 ? this.context.health.failed(engine) : this.context.health.succeeded(engine)));
    }
    if (status >= 400) {
      this.end("upstream_error");
      return;
    }
    // o200k on every streamed delta is per-chunk work the engine's own usage makes moot: where that
    // usage settles the count at the end, the estimate serves until then.
    this.scanner = this.api.scanner(contentType, this.context.maxJsonResponseBytes, this.usageComing ? approximateTokens : outputTokens);
  }

  responseBody(chunk: Uint8Array): void {
    if (this.state === "ended" || this.scanner === undefined || chunk.length === 0) return;
    this.record(this.scanner.push(chunk));
  }

  /** The response reached its end of stream. */
  responseEnd(): void {
    if (this.state === "ended") return;
    if (this.scanner !== undefined) this.record(this.scanner.end());
    this.end(this.status >= 400 ? "upstream_error" : "ok");
  }

  /**
   * The stream ended early: a reset or cancel, no response phase at all (a local reply), or the
   * sidecar's own shutdown. Only the engine's evidence counts against it: with no response, the
   * health reporter asks the engine itself (a client that gave up looks the same to us).
   */
  abort(outcome: "client_reset" | "no_response" | "shutdown"): void {
    if (this.state === "ended") return;
    const reserved = this.reserved;
    if (outcome === "no_response" && reserved !== undefined) this.safely(() => this.context.health.unanswered(reserved.engine));
    this.end(outcome);
  }

  /** Something inside this exchange failed: it ends here (released once, one log line naming the cause). */
  fail(cause: unknown): void {
    if (this.state === "ended") return;
    // Before the decision the transport answers the request itself (500): counted as a refusal too.
    const answeredHere = this.state === "receiving" || this.state === "deciding";
    this.failure = asError(cause);
    this.end("internal_error");
    if (answeredHere) this.safely(() => this.context.events.refused("internal_error", this.refusedPool));
  }

  /** The transport answered the request itself; nothing was reserved. One log line, like a finished request. */
  refused(refusal: Refusal, requestId: string | undefined): void {
    if (this.state === "ended") return;
    this.end("refused");
    this.safely(() => {
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
    });
  }

  private record(progress: ResponseProgress): void {
    // Before the generated tokens: prefill ends, then the output is held.
    if (progress.firstToken !== undefined && this.firstTokenAt === undefined) {
      this.firstTokenAt = performance.now();
      this.enter("streaming");
      this.effect(() => this.context.store.firstToken(this.id));
      const seconds = (this.firstTokenAt - this.startedAt) / 1000;
      this.safely(() => this.context.events.firstToken(seconds));
      const forecast = this.forecast;
      const at = this.firstTokenAt;
      // A whole body comes when generation has ended: its time would teach the model the full duration.
      if (forecast !== undefined && progress.firstToken === "event") this.safely(() => forecast.of.seen(at - forecast.pickedAt));
    }
    const engine = this.reserved?.engine;
    // Streamed output leaves the engine at the end of one of its steps.
    if (engine !== undefined && (progress.generated > 0 || progress.firstToken === "event")) this.safely(() => this.context.steps.seen(engine));
    if (progress.generated > 0) {
      this.generated += progress.generated;
      this.effect(() => this.context.store.addGenerated(this.id, progress.generated));
    }
    const usage = progress.usage;
    if (usage !== undefined) {
      this.generated = usage.completionTokens;
      this.reported = usage;
      this.effect(() => this.context.store.reconcile(this.id, usage));
    }
    if (progress.rejectedUsage !== undefined && !this.usageRejected) {
      this.usageRejected = true;
      this.safely(() => this.context.log.warn({ id: this.id, requestId: this.requestId, engine: this.reserved?.engine, usage: progress.rejectedUsage }, "engine usage ignored: not a sane token count"));
    }
    if (progress.error !== undefined) this.end("upstream_error");
  }

  /** Into `ended`, once: the reservation (if any) is released, then the exchange's one log line. */
  private end(outcome: ExchangeOutcome): void {
    if (this.state === "ended") return;
    this.enter("ended");
    this.outcome = outcome;
    clearTimeout(this.prefillEstimate);
    this.countLater = undefined;
    this.ended.abort();
    if (this.reserved !== undefined) this.release();
    else if (outcome === "internal_error") this.safely(() => this.logEnd(undefined));
    this.maybeSettled();
  }

  private release(): void {
    const reserved = this.reserved;
    const outcome = this.outcome;
    if (reserved === undefined || outcome === undefined || outcome === "refused" || this.releasing) return;
    this.releasing = true;
    const { pool, engine } = reserved;
    const storeOutcome: Outcome = outcome;
    // Not released means the TTL sweep expired it first; that sweep logged it.
    this.effect(
      () => andThen(this.context.store.release(this.id, storeOutcome), (released) => (released ? this.logEnd({ pool, engine }) : undefined)),
      () => this.logEnd({ pool, engine }),
    );
  }

  /** The exchange's one line: finished, or failed naming the cause (a release that failed is named there too). */
  private logEnd(reserved: { pool: string; engine: string } | undefined): void {
    const outcome = this.outcome === "refused" ? undefined : this.outcome;
    if (outcome === undefined) return;
    const seconds = (performance.now() - this.startedAt) / 1000;
    if (reserved !== undefined) this.context.events.finished(seconds, outcome);
    const fields = {
      requestId: this.requestId,
      model: this.model,
      pool: reserved?.pool,
      engine: reserved?.engine,
      promptTokens: this.promptTokens,
      reportedPromptTokens: this.reported?.promptTokens,
      cachedTokens: this.reported?.cachedTokens,
      completionTokens: this.generated,
      ttftMs: this.firstTokenAt === undefined ? undefined : Math.round(this.firstTokenAt - this.startedAt),
      durationMs: Math.round(seconds * 1000),
      status: this.status || undefined,
      outcome,
    };
    if (this.failure === undefined) this.context.log.info(fields, "request finished");
    else this.context.log.error({ ...fields, cause: this.failure.message }, outcome === "internal_error" ? "request failed" : "request finished; its release failed");
  }

  private enter(next: ExchangeState): void {
    if (!TRANSITIONS[this.state].includes(next)) throw new LifecycleError(`exchange ${this.id} cannot go from ${this.state} to ${next}`);
    this.state = next;
  }

  /**
   * Runs store operations in order (synchronous stores never touch a promise). A throw or rejection
   * fails the exchange; after its end (its release failed), `afterFailure` runs instead, so its line is still written.
   */
  private effect(operation: () => Awaitable<unknown>, afterFailure?: () => void): void {
    const failed = (error: unknown): void => {
      if (this.state !== "ended") return this.failInside(error);
      this.failure ??= asError(error);
      if (afterFailure !== undefined) this.safely(afterFailure);
    };
    if (this.chain !== undefined) return this.pending(this.chain.then(operation).catch(failed));
    let result: Awaitable<unknown>;
    try {
      result = operation();
    } catch (error) {
      return failed(error);
    }
    if (result instanceof Promise) this.pending(result.catch(failed));
  }

  /** The last store operation in flight; the exchange is settled once none is. */
  private pending(operation: Promise<unknown>): void {
    this.chain = operation;
    const done = (): void => {
      if (this.chain !== operation) return;
      this.chain = undefined;
      this.maybeSettled();
    };
    void operation.then(done, done);
  }

  /** A metric, health report or log line: a throw fails the exchange, like a store call. */
  private safely(run: () => void): void {
    try {
      run();
    } catch (error) {
      if (this.state !== "ended") this.failInside(error);
      else this.context.log.error({ err: error, id: this.id }, "exchange effect failed after its end");
    }
  }

  private failInside(error: unknown): void {
    this.fail(error);
    try {
      this.failureListener?.(asError(error));
    } catch (listenerError) {
      this.context.log.error({ err: listenerError, id: this.id }, "ending a failed exchange's stream failed");
    }
  }

  private maybeSettled(): void {
    if (this.state === "ended" && this.chain === undefined) this.settleDone?.();
  }
}
