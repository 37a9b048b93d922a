import type { LoadStore, Reservation } from "../load/store.js";
import type { PoolDirectory } from "../pools/pools.js";
import { leastLoaded, type ScoreWeights } from "./score.js";

export interface PickRequest {
  /** Ledger key for the reservation. */
  id: string;
  model: string | undefined;
  promptTokens: number;
  /** The gateway's subset hint: only these `ip:port` may be picked. Undefined = no hint. */
  subset?: readonly string[] | undefined;
}

export type PickResult =
  | { kind: "picked"; reservation: Reservation; fallbacks: string[] }
  | { kind: "no_pool"; model: string | undefined }
  | { kind: "no_engine"; pool: string }
  /** The subset hint left no engine of the pool to pick from. */
  | { kind: "outside_subset"; pool: string }
  | { kind: "saturated"; pool: string; limit: number };

export interface PickerSettings {
  weights: ScoreWeights;
  /** Open requests per engine before it stops taking more; 0 = no limit. */
  maxRequestsPerEngine: number;
  /** Next-best engines named after the chosen one. */
  fallbacks: number;
}

/** Which engines may be picked now, and how far each is from warm (see pools/health.ts). */
export interface EngineAvailability {
  eligible(engine: string): boolean;
  coldness(engine: string): number;
}

const alwaysAvailable: EngineAvailability = { eligible: () => true, coldness: () => 0 };

/** Candidates from the model's pool, scored by load, picked and reserved in one store step. */
export class Picker {
  private readonly choose;

  constructor(
    private readonly store: LoadStore,
    private readonly directory: () => PoolDirectory,
    private readonly settings: PickerSettings,
    private readonly availability: EngineAvailability = alwaysAvailable,
    random: () => number = Math.random,
  ) {
    this.choose = leastLoaded(settings.weights, random, (engine) => availability.coldness(engine));
  }

  async pick(request: PickRequest): Promise<PickResult> {
    const pool = this.directory().forModel(request.model);
    if (pool === undefined) return { kind: "no_pool", model: request.model };
    let candidates = pool.endpoints;
    if (request.subset !== undefined) {
      const allowed = new Set(request.subset);
      candidates = candidates.filter((engine) => allowed.has(engine));
      if (candidates.length === 0) return { kind: "outside_subset", pool: pool.name };
    }
    // With every engine ejected, all are tried (Envoy's panic routing): errors that hit every
    // engine at once are more likely the requests' fault than all engines'.
    const healthy = candidates.filter((engine) => this.availability.eligible(engine));
    if (healthy.length > 0) candidates = healthy;
    const outcome = await this.store.pickAndReserve({
      id: request.id,
      pool: pool.name,
      candidates,
      promptTokens: request.promptTokens,
      choose: this.choose,
      maxRequests: this.settings.maxRequestsPerEngine,
      fallbacks: this.settings.fallbacks,
    });
    switch (outcome.kind) {
      case "reserved":
        return { kind: "picked", reservation: outcome.reservation, fallbacks: outcome.fallbacks };
      case "saturated":
        return { kind: "saturated", pool: pool.name, limit: this.settings.maxRequestsPerEngine };
      case "none":
        return { kind: "no_engine", pool: pool.name };
    }
  }
}
