import type { EngineSnapshot, LoadStore } from "../load/store.js";
import type { PoolDirectory } from "../pools/pools.js";

/** The load as of one moment: each pool's engines and every engine's numbers. */
export interface LoadSnapshot {
  /** Configured pools and clusters only the HTTP API reported, each with its engines. */
  pools: Map<string, string[]>;
  loads: Map<string, EngineSnapshot>;
  /** Open reservations. */
  ledger: number;
}

/** A pool's engines are its configured endpoints plus any engine with open requests recorded under it. */
export async function poolEngines(store: LoadStore, directory: PoolDirectory, name: string): Promise<string[]> {
  return [...new Set([...(directory.named(name)?.endpoints ?? []), ...(await store.enginesOf(name))])];
}

export async function readLoadSnapshot(store: LoadStore, directory: PoolDirectory): Promise<LoadSnapshot> {
  const names = new Set([...directory.pools.map((pool) => pool.name), ...(await store.pools())]);
  const pools = new Map<string, string[]>();
  for (const name of names) pools.set(name, await poolEngines(store, directory, name));
  return { pools, loads: await store.loads([]), ledger: await store.size() };
}
