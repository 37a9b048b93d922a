import { parseConfig } from "../../src/config/load.js";
import type { Config } from "../../src/config/schema.js";
import type { EngineLoad } from "../../src/load/store.js";
import { createLogger } from "../../src/log.js";
import { startSidecar, type Sidecar } from "../../src/sidecar.js";

export interface PoolSpec {
  name: string;
  models: string[];
  endpoints?: string[];
  dns?: { name: string; port: number; intervalSeconds?: number; servers?: string[] };
}

/** Starts the real sidecar in this process on free ports, with the given pools and settings. */
export async function startTestSidecar(pools: PoolSpec[], extra: Record<string, unknown> = {}): Promise<Sidecar & { config: Config }> {
  const config = parseConfig(
    JSON.stringify({
      extproc: { port: 0 },
      health: { port: 0 },
      http: { port: 0 },
      log: { level: process.env["TEST_LOG_LEVEL"] ?? "silent" },
      ...extra,
      pools,
    }),
    "test-config",
  );
  const sidecar = await startSidecar(config, createLogger(config.log.level));
  return Object.assign(sidecar, { config });
}

/** Sum of every engine's numbers: all zero once traffic has stopped. */
export async function totalLoad(sidecar: Sidecar): Promise<EngineLoad & { ledger: number }> {
  const total = { requests: 0, prefillRequests: 0, prefillTokens: 0, tokensHeld: 0, ledger: await sidecar.store.size() };
  for (const load of (await sidecar.store.loads([])).values()) {
    total.requests += load.requests;
    total.prefillRequests += load.prefillRequests;
    total.prefillTokens += load.prefillTokens;
    total.tokensHeld += load.tokensHeld;
  }
  return total;
}

export const idle = { requests: 0, prefillRequests: 0, prefillTokens: 0, tokensHeld: 0, ledger: 0 };
