import type { LoadStore, Reservation } from "../load/store.js";
import type { PoolDirectory } from "../pools/pools.js";
import { buildChain, type Chain, type ChainSettings } from "./chain.js";
import type { EngineAvailability, PickPlan, SchedulingRequest } from "./plan.js";

export type { EngineAvailability, SchedulingRequest as PickRequest } from "./plan.js";

export type PickResult =
  | { kind: "picked"; reservation: Reservation; fallbacks: string[] }
  | { kind: "no_pool"; model: string | undefined }
  | { kind: "no_engine"; pool: string }
  /** The subset hint left no engine of the pool to pick from. */
  | { kind: "outside_subset"; pool: string }
  | { kind: "saturated"; pool: string; limit: number };

export interface PickerSettings extends ChainSettings {
  /** Next-best engines named after the chosen one. */
  fallbacks: number;
}

const alwaysAvailable: EngineAvailability = { eligible: () => true, coldness: () => 0 };

/** The model's pool, then the chain's filters and scorers; the store picks and reserves in one step. */
export class Picker {
  private readonly chain: Chain;

  constructor(
    private readonly store: LoadStore,
    private readonly directory: () => PoolDirectory,
    private readonly settings: PickerSettings,
    availability: EngineAvailability = alwaysAvailable,
    private readonly random: () => number = Math.random,
  ) {
    this.chain = buildChain(settings, availability);
  }

  async pick(request: SchedulingRequest): Promise<PickResult> {
    const pool = this.directory().forModel(request.model);
    if (pool === undefined) return { kind: "no_pool", model: request.model };
    const plan: PickPlan = {
      pool: pool.name,
      candidates: pool.endpoints,
      bias: [],
      loadWeights: { requests: 0, prefillRequests: 0, prefillTokens: 0, tokensHeld: 0 },
      maxRequests: 0,
    };
    for (const filter of this.chain.filters) {
      const refusal = filter.apply(plan, request);
      if (refusal !== undefined) return { kind: refusal.kind, pool: pool.name };
    }
    plan.bias = plan.candidates.map(() => 0);
    for (const { scorer, weight } of this.chain.scorers) scorer.apply(plan, request, weight);
    const outcome = await this.store.pickAndReserve({
      id: request.id,
      pool: pool.name,
      candidates: plan.candidates,
      bias: plan.bias,
      loadWeights: plan.loadWeights,
      promptTokens: request.promptTokens,
      maxRequests: plan.maxRequests,
      fallbacks: this.settings.fallbacks,
      tieBreak: this.random(),
    });
    switch (outcome.kind) {
      case "reserved":
        return { kind: "picked", reservation: outcome.reservation, fallbacks: outcome.fallbacks };
      case "saturated":
        return { kind: "saturated", pool: pool.name, limit: plan.maxRequests };
      case "none":
        return { kind: "no_engine", pool: pool.name };
    }
  }
}
