import type { EngineLoad } from "../load/store.js";
import type { SchedulingRequest } from "./plan.js";
import { LruSet } from "./lru.js";
import type { PrefixIndex } from "./prefix-index.js";
import { TtftModel } from "./ttft-model.js";

/** Pools with a model of their own: the configured ones and the HTTP API's clusters, which callers name freely. */
const MAX_POOLS = 1024;

/** Told of each first token a forecast was made for (for the prediction-error metric). */
export type TtftObserver = (predictedMs: number, observedMs: number) => void;

/** The TTFT predicted for a reserved request on its engine; told once when its first token comes. */
export interface Forecast {
  readonly predictedMs: number;
  /** The first token came `elapsedMs` after the pick. Only the first call counts. */
  seen(elapsedMs: number): void;
}

/**
 * A TTFT model per pool, each learnt from the first tokens of the pool's own picks against what the
 * pick weighed: the chosen engine's live load, and how much of the prompt that engine would have
 * to prefill (what the prefix index does not believe it holds).
 */
export class TtftPredictor {
  private readonly models = new Map<string, TtftModel>();
  private readonly recency = new LruSet<string>();

  constructor(
    private readonly prefixes: PrefixIndex,
    private readonly observed: TtftObserver = () => undefined,
  ) {}

  /** The pool's model (a fresh one, at its prior, for a pool not seen yet). */
  model(pool: string): TtftModel {
    let model = this.models.get(pool);
    if (model === undefined) {
      if (this.models.size >= MAX_POOLS) {
        const oldest = this.recency.takeOldest();
        if (oldest !== undefined) this.models.delete(oldest);
      }
      this.models.set(pool, (model = new TtftModel()));
    }
    this.recency.touch(pool);
    return model;
  }

  /** Prompt tokens the engine would prefill for this request: those past the leading blocks it is believed to hold. */
  uncachedTokens(engine: string, request: SchedulingRequest): number {
    const blocks = request.prefix;
    if (blocks === undefined || blocks.length === 0) return request.promptTokens;
    const matched = this.prefixes.matched(engine, blocks);
    if (matched === 0) return request.promptTokens;
    const perBlock = request.prefixBlockTokens ?? request.promptTokens / blocks.length;
    return Math.max(0, request.promptTokens - matched * perBlock);
  }

  /** The forecast for a request reserved on `engine`, whose load the pick weighed as `load`. */
  forecast(pool: string, engine: string, load: EngineLoad, request: SchedulingRequest): Forecast {
    const model = this.model(pool);
    const features = { load, uncachedTokens: this.uncachedTokens(engine, request) };
    const predictedMs = model.predict(features);
    let told = false;
    return {
      predictedMs,
      seen: (elapsedMs) => {
        if (told) return;
        told = true;
        model.learn(features, elapsedMs);
        this.observed(predictedMs, elapsedMs);
      },
    };
  }
}
