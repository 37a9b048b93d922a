import type { Fault } from "./faults.js";
import { FAST_MODEL } from "./models.js";
import type { EngineModel } from "./scheduler.js";

export interface EngineSimOptions {
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
  /** The engine's speed and capacity, in vLLM V1's scheduler terms; what is left out is FAST_MODEL's. */
  readonly model?: Partial<EngineModel>;
}

export type ResolvedOptions = Required<Pick<EngineSimOptions, "port" | "defaultMaxTokens" | "maxTokensLimit">> &
  Pick<EngineSimOptions, "models" | "fault"> & { readonly model: EngineModel };

export const DEFAULT_OPTIONS = {
  port: 0,
  defaultMaxTokens: 16,
  maxTokensLimit: 4096,
  model: FAST_MODEL,
} as const satisfies ResolvedOptions;

/** Fills in defaults and refuses nonsensical values with a RangeError naming the option. */
export function resolveOptions(options: EngineSimOptions): ResolvedOptions {
  const { model, ...rest } = withoutUndefined(options);
  const resolved: ResolvedOptions = { ...DEFAULT_OPTIONS, ...rest, model: { ...FAST_MODEL, ...withoutUndefined(model ?? {}) } };
  const { port } = resolved;
  check(Number.isInteger(port) && port >= 0 && port <= 65535, "port", port);
  check(isCount(resolved.defaultMaxTokens), "defaultMaxTokens", resolved.defaultMaxTokens);
  check(isCount(resolved.maxTokensLimit), "maxTokensLimit", resolved.maxTokensLimit);
  const m = resolved.model;
  for (const field of ["tokenBudget", "maxRunning", "kvBlocks", "blockSize"] as const) check(isCount(m[field]), `model.${field}`, m[field]);
  // A step of no time would let the real-time loop catch up forever.
  check(m.stepBaseMs > 0, "model.stepBaseMs", m.stepBaseMs);
  check(m.decodeMsPerSequence >= 0, "model.decodeMsPerSequence", m.decodeMsPerSequence);
  check(m.prefillMsPerToken >= 0, "model.prefillMsPerToken", m.prefillMsPerToken);
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
