import { zeroLoad, type EngineSnapshot, type LoadStore } from "../load/store.js";
import { splitAddress, type PoolDirectory } from "../pools/pools.js";

/** One engine in the metadata-center `GET /v1/load/stats` shape, plus our own numbers. */
export interface EngineStats {
  ip: string;
  port: number;
  endpoint: string;
  queued_req_num: number;
  prompt_length: number;
  prefill_req_num: number;
  tokens_held: number;
  updated_time: number;
}

export function engineStats(endpoint: string, load: EngineSnapshot): EngineStats {
  return {
    ...splitAddress(endpoint),
    endpoint,
    queued_req_num: load.requests,
    prompt_length: load.prefillTokens,
    prefill_req_num: load.prefillRequests,
    tokens_held: load.tokensHeld,
    updated_time: load.updatedAt * 1_000_000,
  };
}

/** The load as of one moment: each pool's engines with that pool's load on them. */
export interface LoadSnapshot {
  /** Configured pools and clusters only the HTTP API reported, each with its engines. */
  pools: Map<string, Map<string, EngineSnapshot>>;
  /** Open reservations. */
  ledger: number;
}

/**
 * A pool's engines with the load its reservations put on them: its configured endpoints (zero
 * when it counted nothing there), then every other engine it counted (open, or idle until expiry).
 */
export async function poolEngines(store: LoadStore, directory: PoolDirectory, name: string): Promise<Map<string, EngineSnapshot>> {
  const counted = await store.poolLoads(name);
  const engines = new Map<string, EngineSnapshot>();
  for (const endpoint of directory.named(name)?.endpoints ?? []) engines.set(endpoint, counted.get(endpoint) ?? { ...zeroLoad(), updatedAt: 0 });
  for (const [engine, load] of counted) if (!engines.has(engine)) engines.set(engine, load);
  return engines;
}

export async function readLoadSnapshot(store: LoadStore, directory: PoolDirectory): Promise<LoadSnapshot> {
  const names = new Set([...directory.pools.map((pool) => pool.name), ...(await store.pools())]);
  const pools = new Map<string, Map<string, EngineSnapshot>>();
  for (const name of names) pools.set(name, await poolEngines(store, directory, name));
  return { pools, ledger: await store.size() };
}
