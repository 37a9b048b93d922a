import type { LoadStore, Reservation } from "../load/store.js";
import type { PoolDirectory } from "../pools/pools.js";
import { leastLoaded, type ScoreWeights } from "./score.js";

export interface PickRequest {
  /** Ledger key for the reservation. */
  id: string;
  model: string | undefined;
  promptTokens: number;
}

export type PickResult =
  | { kind: "picked"; reservation: Reservation }
  | { kind: "no_pool"; model: string | undefined }
  | { kind: "no_engine"; pool: string };

/** Candidates from the model's pool, scored by load, picked and reserved in one store step. */
export class Picker {
  private readonly choose;

  constructor(
    private readonly store: LoadStore,
    private readonly directory: () => PoolDirectory,
    weights: ScoreWeights,
    random: () => number = Math.random,
  ) {
    this.choose = leastLoaded(weights, random);
  }

  async pick(request: PickRequest): Promise<PickResult> {
    const pool = this.directory().forModel(request.model);
    if (pool === undefined) return { kind: "no_pool", model: request.model };
    const reservation = await this.store.pickAndReserve({
      id: request.id,
      pool: pool.name,
      candidates: pool.endpoints,
      promptTokens: request.promptTokens,
      choose: this.choose,
    });
    return reservation === undefined ? { kind: "no_engine", pool: pool.name } : { kind: "picked", reservation };
  }
}
