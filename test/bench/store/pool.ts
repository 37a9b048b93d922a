import { parseConfig } from "../../../src/config/load.js";
import type { Config } from "../../../src/config/schema.js";

/** `count` engines as literal `ip:port`, as a pool's config lists them. */
export const engineAddresses = (count: number): string[] => Array.from({ length: count }, (_, i) => `10.1.${i >> 8}.${i & 255}:8000`);

export const poolName = (engines: number): string => `bench-${engines}`;

/** The keys the Redis store keeps a pool's counters and open reservations under (see redis-store.ts). */
export function poolKeys(prefix: string, pool: string): { engines: string; reservations: string; opened: string } {
  const tag = `${prefix}{${pool}}`;
  return { engines: `${tag}:engines`, reservations: `${tag}:ledger`, opened: `${tag}:open` };
}

export const KEY_PREFIX = "bench:";

/** A config with defaults everywhere but one catch-all pool of `engines` engines, the store and its timeout. */
export function benchConfig(store: "memory" | "redis", engines: number, redisUrl: string, timeoutMs?: number): Config {
  const config = {
    load: { store, redis: { url: redisUrl, keyPrefix: KEY_PREFIX, ...(timeoutMs === undefined ? {} : { timeoutMs }) } },
    pools: [{ name: poolName(engines), models: ["*"], endpoints: engineAddresses(engines) }],
  };
  // JSON is YAML: the same parser and validation as a config file.
  return parseConfig(JSON.stringify(config), "bench");
}
