import type { Fault } from "./faults.js";
import type { TimingOptions } from "./timing.js";

export interface EngineSimOptions extends Partial<TimingOptions> {
  /** TCP port on 127.0.0.1; 0 (default) picks a free one. */
  readonly port?: number;
  /** Models served. When set, other models get 404; when unset, any model is accepted. */
  readonly models?: readonly string[];
  /** Tokens generated when the request sets no max_tokens / max_completion_tokens. */
  readonly defaultMaxTokens?: number;
  /** Cap on tokens generated per choice, whatever the request asks. */
  readonly maxTokensLimit?: number;
  /** Fault played by every generation request without an `x-sim-fault` header. */
  readonly fault?: Fault;
}

export type ResolvedOptions = TimingOptions &
  Required<Pick<EngineSimOptions, "port" | "defaultMaxTokens" | "maxTokensLimit">> &
  Pick<EngineSimOptions, "models" | "fault">;

/** Fast defaults so tests spend little time waiting: ~8 ms for a default 16-token answer. */
export const DEFAULT_OPTIONS = {
  port: 0,
  prefillTokensPerSecond: 1_000_000,
  decodeTokensPerSecond: 2_000,
  overheadMs: 0,
  maxConcurrent: Infinity,
  decodeSlowdownPerRequest: 0,
  defaultMaxTokens: 16,
  maxTokensLimit: 4096,
} as const satisfies ResolvedOptions;

/**
 * Speeds in the range of an 8B model on one GPU, for the demo and the standalone CLI: a loaded
 * engine is visibly slower (queueing, shared prefill, batch slowdown).
 */
export const REALISTIC_TIMING = {
  prefillTokensPerSecond: 8_000,
  decodeTokensPerSecond: 40,
  overheadMs: 5,
  maxConcurrent: 64,
  decodeSlowdownPerRequest: 0.02,
} as const satisfies TimingOptions;

/** Fills in defaults and refuses nonsensical values with a RangeError naming the option. */
export function resolveOptions(options: EngineSimOptions): ResolvedOptions {
  const resolved: ResolvedOptions = { ...DEFAULT_OPTIONS, ...withoutUndefined(options) };
  const { port, maxConcurrent } = resolved;
  check(Number.isInteger(port) && port >= 0 && port <= 65535, "port", port);
  check(resolved.prefillTokensPerSecond > 0, "prefillTokensPerSecond", resolved.prefillTokensPerSecond);
  check(resolved.decodeTokensPerSecond > 0, "decodeTokensPerSecond", resolved.decodeTokensPerSecond);
  check(resolved.overheadMs >= 0, "overheadMs", resolved.overheadMs);
  check(maxConcurrent === Infinity || isCount(maxConcurrent), "maxConcurrent", maxConcurrent);
  check(resolved.decodeSlowdownPerRequest >= 0, "decodeSlowdownPerRequest", resolved.decodeSlowdownPerRequest);
  check(isCount(resolved.defaultMaxTokens), "defaultMaxTokens", resolved.defaultMaxTokens);
  check(isCount(resolved.maxTokensLimit), "maxTokensLimit", resolved.maxTokensLimit);
  return resolved;
}

function isCount(value: number): boolean {
  return Number.isInteger(value) && value >= 1;
}

function check(ok: boolean, option: string, value: number): void {
  if (!ok) throw new RangeError(`engine-sim: invalid ${option}: ${value}`);
}

/** `{ port: undefined }` must mean "default", not override the default with undefined. */
function withoutUndefined<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined)) as Partial<T>;
}
