/**
 * Cost of one /metrics scrape with 1,000 loaded engines: the scrape runs on the event loop
 * that serves ext_proc, so its longest turn is how long a stream may wait. Target ≤ 10 ms per
 * turn. Runs the Metrics of the sidecar alone in this process (no load generator beside it).
 */
import { monitorEventLoopDelay } from "node:perf_hooks";
import { Metrics } from "../../src/api/metrics.js";
import { MemoryLoadStore } from "../../src/load/memory-store.js";
import { PoolDirectory, type Pool } from "../../src/pools/pools.js";
import { BenchRun } from "./report.js";

const POOLS = 10;
const ENGINES_PER_POOL = 100;
const REQUESTS_PER_ENGINE = 4;
const SCRAPES = Number(process.env["BENCH_SCRAPES"] ?? 300);

const run = new BenchRun("bench:metrics", `/metrics with 1,000 loaded engines, ${SCRAPES} scrapes, each's longest event-loop turn`);
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

// The text must be what prom-client's own registry.metrics() gives.
if ((await metrics.text()) !== (await metrics.registry.metrics())) console.log("MISMATCH: text() differs from registry.metrics()");

/**
 * The longest event-loop turn during each scrape: a chain of setImmediate callbacks runs beside
 * it, and the gap between two of them is how long the loop was held in between (what an
 * ext_proc message arriving then would wait). monitorEventLoopDelay (1 ms timer) cross-checks.
 */
async function scrapeWithProbe(): Promise<{ ms: number; blockMs: number; cpuMs: number; bytes: number }> {
  let last = performance.now();
  let lastCpu = process.cpuUsage();
  let worst = 0;
  let worstCpu = 0;
  let probing = true;
  const probe = (): void => {
    const now = performance.now();
    const cpu = process.cpuUsage(lastCpu);
    worst = Math.max(worst, now - last);
    worstCpu = Math.max(worstCpu, (cpu.user + cpu.system) / 1000);
    last = now;
    lastCpu = process.cpuUsage();
    if (probing) setImmediate(probe);
  };
  setImmediate(probe);
  const started = performance.now();
  const text = await metrics.text();
  const ms = performance.now() - started;
  probing = false;
  // The turn that finished the scrape ends before the probe's next callback.
  await new Promise((resolve) => setImmediate(resolve));
  probe();
  return { ms, blockMs: worst, cpuMs: worstCpu, bytes: text.length };
}

run.progress(`store filled; scraping ${SCRAPES} times…`);
const delay = monitorEventLoopDelay({ resolution: 1 });
delay.enable();
const durations: number[] = [];
const blocks: number[] = [];
const cpus: number[] = [];
let bytes = 0;
for (let i = 0; i < SCRAPES; i += 1) {
  const scrape = await scrapeWithProbe();
  durations.push(scrape.ms);
  blocks.push(scrape.blockMs);
  cpus.push(scrape.cpuMs);
  bytes = scrape.bytes;
  // Let the loop idle a moment between scrapes, as between real ones.
  await new Promise((resolve) => setTimeout(resolve, 2));
}
delay.disable();
const at = (values: number[], q: number): string => {
  const sorted = [...values].sort((a, b) => a - b);
  return (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0).toFixed(2);
};
const summary = (values: number[]): string => `p50 ${at(values, 0.5)}  p99 ${at(values, 0.99)}  max ${at(values, 1)}`;
console.log(`engines: ${POOLS * ENGINES_PER_POOL}, open requests: ${id}, scrape size: ${(bytes / 1024).toFixed(0)} KiB, scrapes: ${SCRAPES}`);
run.target(Number(at(blocks, 0.99)) <= 10, `longest event-loop turn per scrape (ms): ${summary(blocks)} (target p99 ≤ 10)`);
console.log(`CPU time of the costliest turn per scrape (ms): ${summary(cpus)}  (the wall figure above also counts time this process was descheduled)`);
console.log(`scrape wall time, all turns (ms): ${summary(durations)}`);
console.log(`event-loop delay over all scrapes, 1 ms timer (ms): p99 ${(delay.percentile(99) / 1e6).toFixed(2)}  max ${(delay.max / 1e6).toFixed(2)}`);
run.finish();
