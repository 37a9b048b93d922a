/** What one engine is carrying right now, as seen from the traffic. */
export interface EngineLoad {
  /** Requests sent to the engine and not yet finished. */
  requests: number;
  /** Requests whose first token has not been seen yet. */
  prefillRequests: number;
  /** Prompt tokens of the requests still in prefill. */
  prefillTokens: number;
  /** Prompt plus generated tokens of the requests in flight: a live estimate of KV-cache use. */
  tokensHeld: number;
}

/** An engine's load with the time it last changed (ms since the epoch; 0 if never). */
export interface EngineSnapshot extends EngineLoad {
  updatedAt: number;
}

export type Awaitable<T> = T | Promise<T>;

/** `next(value)` at once when the value is there, after it otherwise: a synchronous store keeps its caller synchronous. */
export function andThen<T, R>(value: Awaitable<T>, next: (value: T) => Awaitable<R>): Awaitable<R> {
  return value instanceof Promise ? value.then(next) : next(value);
}

/** Why a reservation was closed; kept for logs and metrics. */
export type Outcome =
  | "ok"
  | "upstream_error"
  | "client_reset"
  | "no_response"
  | "expired"
  | "shutdown"
  /** The sidecar failed on this exchange (a store call, a parser, a metric): it ended there, nothing counted against the engine. */
  | "internal_error";

/** The live load numbers, in the order every store weighs them. */
export const loadDimensions = ["requests", "prefillRequests", "prefillTokens", "tokensHeld"] as const;

/** How much each live load number weighs in a pick; each is normalised by its largest value among the candidates. */
export interface LoadWeights {
  requests: number;
  prefillRequests: number;
  prefillTokens: number;
  tokensHeld: number;
}

/**
 * One pick, as the scheduling chain planned it: the store reads the candidates' live loads,
 * drops those at `maxRequests`, ranks the rest (see ranking.ts) and reserves the first, all in
 * one atomic step. Everything that depends on the request alone arrives already computed.
 */
export interface PickRequest {
  /** Ledger key; unique among open reservations. */
  id: string;
  pool: string;
  /** Engines allowed for this request, as `ip:port`. */
  candidates: readonly string[];
  /** Added to each candidate's score (same order): the request-dependent scorers' share. */
  bias: readonly number[];
  loadWeights: LoadWeights;
  /**
   * Cost of one unit of each live number, added as is, not normalised: a scorer that predicts in
   * its own units (the TTFT predictor's ms) weighs load in the bias's units. Absent = none.
   */
  unitWeights?: LoadWeights | undefined;
  promptTokens: number;
  /** Open requests an engine may carry: an engine at the limit is not eligible. 0 = no limit. */
  maxRequests: number;
  /** Requests in prefill an engine may carry, likewise. Absent or 0 = no limit. */
  maxPrefillRequests?: number | undefined;
  /** How many next-best engines to name after the chosen one (for Envoy's retries). */
  fallbacks: number;
  /** In [0, 1): which of equally scored candidates wins, drawn by the caller so that every store breaks ties alike. */
  tieBreak: number;
  /**
   * The id is a caller's (the HTTP API's request_id), not one the sidecar made unique: it must
   * not be open in any pool, and any replica sharing the store may be asked to release it.
   */
  externalId?: boolean | undefined;
}

export type PickOutcome =
  /** `load`: the chosen engine's as the pick weighed it, before this reservation. */
  | { kind: "reserved"; reservation: Reservation; fallbacks: string[]; load: EngineLoad }
  /** Every candidate is at `maxRequests` or `maxPrefillRequests`: the request must wait or be shed. Nothing reserved. */
  | { kind: "saturated" }
  /** The id is already open. Nothing reserved. */
  | { kind: "duplicate" }
  /** No candidate. Nothing reserved. */
  | { kind: "none" };

export interface Reservation {
  id: string;
  pool: string;
  engine: string;
  promptTokens: number;
}

/**
 * Limits the engine must stay within once the reservation is counted, on the numbers its pool
 * puts on it (those `GET /v1/load/stats` shows): a conditional add.
 */
export interface LoadBound {
  /** Open requests, this one included. */
  maxRequests?: number | undefined;
  /** Prompt tokens in prefill, this one's included. */
  maxPrefillTokens?: number | undefined;
}

/** A reservation for an engine chosen elsewhere (observer role, the HTTP API's adds). */
export interface ReserveRequest extends Reservation {
  /** Reserve only within these limits, checked and counted in one atomic step. */
  bound?: LoadBound | undefined;
}

/** Nothing is counted unless reserved. */
export type ReserveOutcome =
  | { kind: "reserved" }
  /** The id was already open. */
  | { kind: "duplicate" }
  /** The engine is at the bound: its pool's numbers as they were when the bound was checked. */
  | { kind: "over_bound"; load: EngineSnapshot };

/** Token counts the engine itself reported (OpenAI `usage`). */
export interface ReportedUsage {
  promptTokens: number;
  completionTokens: number;
  /** `prompt_tokens_details.cached_tokens`: prompt tokens served from the engine's prefix cache. */
  cachedTokens?: number;
}

/**
 * The load numbers and the ledger of open requests behind them. Async-capable so that a
 * shared store (one network round trip per operation) fits the same interface; the memory
 * store answers synchronously.
 */
export interface LoadStore {
  /** Choose among the candidates by the weights and record the reservation, in one atomic step. */
  pickAndReserve(request: PickRequest): Awaitable<PickOutcome>;
  /** Record a reservation on an engine chosen elsewhere, within its bound if it has one. */
  reserve(request: ReserveRequest): Awaitable<ReserveOutcome>;
  /** True while the reservation is open. */
  has(id: string): Awaitable<boolean>;
  /** The first token was seen: the request leaves prefill. Idempotent. */
  firstToken(id: string): Awaitable<void>;
  /** Tokens generated so far add to the tokens the engine holds. */
  addGenerated(id: string, tokens: number): Awaitable<void>;
  /** Replace the counted prompt/completion tokens by the engine's own numbers. */
  reconcile(id: string, usage: ReportedUsage): Awaitable<void>;
  /**
   * Carry the open reservation over to another engine (the one that actually served it), its
   * counts with it. False when it is not open.
   */
  move(id: string, engine: string): Awaitable<boolean>;
  /** Close the reservation. Returns false when it was not open (already released or expired). */
  release(id: string, outcome: Outcome): Awaitable<boolean>;
  /**
   * Current load of each engine the store knows, over every pool's reservations on it (what a
   * pick weighs), plus zeroes for the engines asked about.
   */
  loads(engines: readonly string[]): Awaitable<Map<string, EngineSnapshot>>;
  /**
   * The load a pool's reservations put on each engine, for every engine that pool counted: with
   * open reservations, or idle and updated within the expiry time (as the Go metadata-center
   * keeps one counter per cluster and engine, listed at zero until its GC drops it).
   */
  poolLoads(pool: string): Awaitable<Map<string, EngineSnapshot>>;
  /** Pools that have counted an engine (`poolLoads` not empty), including clusters only the HTTP API reported. */
  pools(): Awaitable<string[]>;
  /**
   * Close every reservation opened more than `olderThanMs` ago, and forget idle engines (and a
   * pool's idle engines) not updated for as long. Returns how many reservations expired.
   */
  expire(olderThanMs: number, onExpired?: (reservation: Reservation) => void): Awaitable<number>;
  /** Number of open reservations. */
  size(): Awaitable<number>;
}

export const zeroLoad = (): EngineLoad => ({ requests: 0, prefillRequests: 0, prefillTokens: 0, tokensHeld: 0 });

/** Adds `from`'s numbers to `into`'s, engine by engine (the later update time kept). */
export function addLoads(into: Map<string, EngineSnapshot>, from: ReadonlyMap<string, EngineSnapshot>): Map<string, EngineSnapshot> {
  for (const [engine, load] of from) {
    const sum = into.get(engine) ?? { ...zeroLoad(), updatedAt: 0 };
    into.set(engine, {
      requests: sum.requests + load.requests,
      prefillRequests: sum.prefillRequests + load.prefillRequests,
      prefillTokens: sum.prefillTokens + load.prefillTokens,
      tokensHeld: sum.tokensHeld + load.tokensHeld,
      updatedAt: Math.max(sum.updatedAt, load.updatedAt),
    });
  }
  return into;
}
