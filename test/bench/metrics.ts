/**
 * Cost of one /metrics scrape with 1,000 loaded engines: the scrape runs on the event loop
 * that serves ext_proc, so its duration is how long every stream waits. Target ≤ 10 ms.
 */
import { monitorEventLoopDelay } from "node:perf_hooks";
import { Metrics } from "../../src/api/metrics.js";
import { MemoryLoadStore } from "../../src/load/memory-store.js";
import { PoolDirectory, type Pool } from "../../src/pools/pools.js";

const POOLS = 10;
const ENGINES_PER_POOL = 100;
const REQUESTS_PER_ENGINE = 4;
const SCRAPES = 100;

const pools: Pool[] = Array.from({ length: POOLS }, (_, p) => ({
  name: `pool-${p}`,
  models: [`model-${p}`],
  endpoints: Array.from({ length: ENGINES_PER_POOL }, (_, e) => `10.${p}.${e >> 8}.${e & 255}:8000`),
}));
const store = new MemoryLoadStore();
let id = 0;
for (const pool of pools) {
  for (const engine of pool.endpoints) {
    for (let r = 0; r < REQUESTS_PER_ENGINE; r += 1) {
      store.reserve({ id: `r${(id += 1)}`, pool: pool.name, engine, promptTokens: 100 + r });
      if (r % 2 === 0) store.firstToken(`r${id}`);
    }
  }
}
const directory = new PoolDirectory(pools);
const metrics = new Metrics({ store, directory: () => directory });

// Warm up the JIT and prom-client's label maps, as a long-running sidecar would be.
for (let i = 0; i < 20; i += 1) await metrics.text();

const delay = monitorEventLoopDelay({ resolution: 1 });
delay.enable();
const durations: number[] = [];
let bytes = 0;
for (let i = 0; i < SCRAPES; i += 1) {
  const started = performance.now();
  bytes = (await metrics.text()).length;
  durations.push(performance.now() - started);
  // Yield a loop turn between scrapes so the delay monitor sees each one on its own.
  await new Promise((resolve) => setImmediate(resolve));
}
delay.disable();
durations.sort((a, b) => a - b);
const at = (q: number): string => (durations[Math.min(durations.length - 1, Math.floor(q * durations.length))] ?? 0).toFixed(2);
console.log(`engines: ${POOLS * ENGINES_PER_POOL}, open requests: ${id}, scrape size: ${(bytes / 1024).toFixed(0)} KiB`);
console.log(`scrape time (ms): p50 ${at(0.5)}  p99 ${at(0.99)}  max ${at(1)}  (target ≤ 10)`);
console.log(`event-loop delay during scrapes (ms): max ${(delay.max / 1e6).toFixed(2)}  p99 ${(delay.percentile(99) / 1e6).toFixed(2)}`);
