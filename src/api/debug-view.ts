import type { LoadStore } from "../load/store.js";
import type { PoolDirectory } from "../pools/pools.js";
import { readLoadSnapshot } from "./load-snapshot.js";

export interface EngineView {
  engine: string;
  requests: number;
  prefill_requests: number;
  prefill_tokens: number;
  tokens_held: number;
  /** ms since the epoch of the last change; 0 if never. */
  updated_at: number;
}

export interface PoolView {
  name: string;
  /** Models served; empty for a cluster only the HTTP API reported. */
  models: readonly string[];
  configured: boolean;
  engines: EngineView[];
}

export interface PoolsView {
  ledger: number;
  /** Totals since start (picks, first tokens, their summed TTFT): rates come from two readings. */
  traffic: { picks: number; first_tokens: number; ttft_seconds: number };
  /** Deletes that found no open request, waiting for their add or their one retry. */
  waiting_deletes: number;
  pools: PoolView[];
}

/** `GET /debug/pools`: every pool, its engines and their load, for a human looking at one sidecar. */
export async function poolsView(store: LoadStore, directory: PoolDirectory, waitingDeletes: number, traffic: PoolsView["traffic"]): Promise<PoolsView> {
  const snapshot = await readLoadSnapshot(store, directory);
  const pools = [...snapshot.pools].map(([name, engines]): PoolView => {
    const pool = directory.named(name);
    return {
      name,
      models: pool?.models ?? [],
      configured: pool !== undefined,
      engines: [...engines].map(([engine, load]) => ({
        engine,
        requests: load.requests,
        prefill_requests: load.prefillRequests,
        prefill_tokens: load.prefillTokens,
        tokens_held: load.tokensHeld,
        updated_at: load.updatedAt,
      })),
    };
  });
  return { ledger: snapshot.ledger, traffic, waiting_deletes: waitingDeletes, pools };
}
