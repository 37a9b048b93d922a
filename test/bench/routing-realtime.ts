// bench:routing:realtime — the mixed workload in on/off bursts at 85 % of capacity, in real time:
// HTTP engines running the vLLM V1 step model (Llama-3.1-8B on H100, slowed down so this machine
// keeps up), the real sidecar in its own process, the Envoy-faithful ext_proc client in front.
// The sidecar's choice against round robin driven the same way, each beside the virtual-time run
// of the same request list and model.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { parseConfig } from "../../src/config/load.js";
import { startEngineSim, type EngineSim } from "../engine-sim/engine.js";
import { LLAMA_8B_H100, slowedDown } from "../engine-sim/models.js";
import { RoundRobinRouter } from "../sim/peers.js";
import { requestBody, runRealTime, warmUpRequests, type Chooser, type LiveOutcome } from "../sim/realtime.js";
import { SidecarRouter, type Router, type SimRequest } from "../sim/routers.js";
import { capacity, quantile, runWorkload, summarize, type Summary } from "../sim/run.js";
import { mixed } from "../sim/workloads.js";
import { serve, type Running } from "../support/process.js";
import { mulberry32 } from "../support/random.js";
import { schedulingDefaults } from "../support/scheduling.js";
import { tempFolder } from "../support/temp.js";
import { picksAlone } from "./picks-alone.js";
import { histogramBuckets, quantileBetween, scrapeOnce, shareWithin } from "./prometheus.js";
import { machine } from "./report.js";
import { verdict } from "./store/figures.js";
import { cpuSeconds } from "./process-stats.js";

const ENGINES = Number(process.env["BENCH_ENGINES"] ?? 4);
/** Wall ms per model ms. At 1 the cluster takes ~100 requests and ~18,000 streamed tokens a second: more than a small machine pushes through the client and the sidecar. */
const TIME_SCALE = Number(process.env["BENCH_TIME_SCALE"] ?? 5);
/** Wall seconds of arrivals. */
const SECONDS = Number(process.env["BENCH_SECONDS"] ?? 30);
const SEED = Number(process.env["BENCH_SEED"] ?? 1);
const LOAD = 0.85;
const BURSTS = { on: 2, off: 4 };
const MODEL = "meta-llama/Llama-3.1-8B-Instruct";
const PICK_HISTOGRAM = "metadata_center_pick_latency_seconds";
/**
 * The event-loop monitors' timer, ms: this process's and the sidecar's (its metrics sample at 10 ms).
 * What they record is the timer's whole interval, so an idle loop reads this much: it is taken off.
 */
const LOOP_RESOLUTION_MS = 10;
/** Requests sent, not measured, before each run: a cold sidecar and cold engines pay once for connections, compiling and the tokenizers' tables. */
const WARM_UP = 20;
const PICK_TARGET_MS = 2;


interface LiveRun {
  outcomes: LiveOutcome[];
  /** Inside the sidecar, ms (its histogram's bucket bounds); the share of picks within the target. */
  pick: { p50: number; p99: number; withinTarget: number };
  sidecarCpuSeconds: number;
  seconds: number;
  /** Engine steps applied late against the model's clock, wall ms. */
  stepsLate: { mean: number; max: number };
  /** This process's (the client's and the engines') event-loop delay, ms. */
  loopDelay: { p99: number; max: number };
  /** The sidecar's own event-loop delay over the run (its nodejs_eventloop_lag gauges, 10 ms resolution), ms: every pick waits behind it. */
  sidecarLoop: { p99: number; max: number };
  cachedPromptTokens: number;
}

/** One run's engines and sidecar, all started before the first run. */
interface Setup {
  engines: EngineSim[];
  sidecar: Running;
}

async function setUp(): Promise<Setup> {
  const model = slowedDown(LLAMA_8B_H100, TIME_SCALE);
  const engines: EngineSim[] = await Promise.all(Array.from({ length: ENGINES }, () => startEngineSim({ model })));
  const config = join(tempFolder("mc-realtime-"), "sidecar.yaml");
  writeFileSync(config, sidecarConfig(engines.map((engine) => engine.address)));
  return { engines, sidecar: await serve(["--config", config]) };
}

/** The sidecar's config: defaults but the ports, one pool of the engines. It logs one line per request at info, as in production. */
function sidecarConfig(endpoints: readonly string[]): string {
  const listed = endpoints.map((endpoint) => `"${endpoint}"`).join(", ");
  return `log: { level: info }\nextproc: { port: 0 }\nhealth: { port: 0 }\nhttp: { port: 0 }\npools: [{ name: llama, models: ["*"], endpoints: [${listed}] }]\n`;
}

async function tearDown({ engines, sidecar }: Setup): Promise<void> {
  sidecar.child.kill("SIGTERM");
  await sidecar.exit;
  await Promise.all(engines.map((engine) => engine.close()));
}

async function live({ engines, sidecar }: Setup, chooser: Chooser, requests: readonly SimRequest[], warmUp: readonly SimRequest[]): Promise<LiveRun> {
  const loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  const settings = { extProc: `127.0.0.1:${sidecar.ports.extproc}`, engines: engines.map((engine) => engine.address), chooser, timeScale: TIME_SCALE, model: MODEL };
  await runRealTime(warmUp, settings);
  const metrics = `http://127.0.0.1:${sidecar.ports.http}/metrics`;
  const before = await histogramBuckets(metrics, PICK_HISTOGRAM);
  const cpuBefore = cpuSeconds(sidecar.child.pid!);
  const stepsBefore = engines.map((engine) => engine.steps());
  const cachedBefore = engines.reduce((n, engine) => n + engine.stats().cachedPromptTokens, 0);
  const started = performance.now();
  loop.enable();
  const outcomes = await runRealTime(requests, {
    ...settings,
    progressMs: 5000,
    progress: ({ elapsedMs, sent, done }) => {
      const stats = engines.map((engine) => engine.stats());
      console.log(
        `    ${(elapsedMs / 1000).toFixed(0).padStart(3)} s: ${sent}/${requests.length} sent, ${done} done, ${sent - done} open;` +
          ` engines running ${stats.map((s) => s.running).join(" ")}, waiting ${stats.map((s) => s.queued).join(" ")}`,
      );
    },
  });
  loop.disable();
  const seconds = (performance.now() - started) / 1000;
  // The scrape before reset the sidecar's event-loop summary: this one covers the run alone.
  const scraped = await scrapeOnce(metrics);
  const after = scraped.histogram(PICK_HISTOGRAM);
  const lag = (name: string): number => (scraped.gauge(name) ?? NaN) * 1000 - LOOP_RESOLUTION_MS;
  const sidecarLoop = { p99: lag("nodejs_eventloop_lag_p99_seconds"), max: lag("nodejs_eventloop_lag_max_seconds") };
  const steps = engines.map((engine) => engine.steps());
  const stepCount = steps.reduce((n, s, i) => n + s.steps - stepsBefore[i]!.steps, 0);
  const lateTotal = steps.reduce((t, s, i) => t + s.lateMs.total - stepsBefore[i]!.lateMs.total, 0);
  return {
    outcomes,
    pick: { p50: quantileBetween(before, after, 0.5) * 1000, p99: quantileBetween(before, after, 0.99) * 1000, withinTarget: shareWithin(before, after, PICK_TARGET_MS / 1000) },
    sidecarCpuSeconds: cpuSeconds(sidecar.child.pid!) - cpuBefore,
    seconds,
    // The max is over the whole run, warm-up included: the engines keep no history of it.
    stepsLate: { mean: lateTotal / stepCount, max: Math.max(...steps.map((s) => s.lateMs.max)) },
    loopDelay: { p99: loop.percentile(99) / 1e6 - LOOP_RESOLUTION_MS, max: loop.max / 1e6 - LOOP_RESOLUTION_MS },
    sidecarLoop,
    cachedPromptTokens: engines.reduce((n, engine) => n + engine.stats().cachedPromptTokens, 0) - cachedBefore,
  };
}

const f = (value: number): string => value.toFixed(value >= 100 ? 0 : 1).padStart(7);
const ttfts = (s: Summary): string => `${f(s.ttft.mean)} ${f(s.ttft.p50)} ${f(s.ttft.p99)}`;

async function main(): Promise<void> {
  const started = performance.now();
  const models = Array.from({ length: ENGINES }, () => LLAMA_8B_H100);
  console.log(
    `bench:routing:realtime: ${ENGINES} HTTP engines, each the vLLM V1 step model with Llama-3.1-8B-on-H100 step times (vLLM v0.8.4, fitted by inference-sim)` +
      ` slowed down ${TIME_SCALE}× (arrivals spread as much), the sidecar in its own process, the Envoy-faithful ext_proc client; seed ${SEED}`,
  );
  console.log(`machine: ${machine()}`);
  const full = await capacity(models, mixed, 2000, SEED + 100);
  const rate = LOAD * full;
  const count = Math.round((rate * SECONDS) / TIME_SCALE);
  const requests = mixed.requests(count, { rate, bursts: BURSTS }, SEED);
  const outputTokens = requests.reduce((sum, r) => sum + r.outputTokens, 0);
  // At a quarter of the rate, answers of 8 tokens at most: a few seconds before each measured run.
  const warmUp = warmUpRequests(mixed.requests(WARM_UP, { rate: rate / 4 }, SEED + 200), 8);
  console.log(
    `mixed (${mixed.description}) in on/off bursts (${BURSTS.on} s on, ${BURSTS.off} s off) at ${LOAD * 100} % of capacity:` +
      ` ${full.toFixed(1)} requests/s (virtual time, all at once, round robin) → ${rate.toFixed(1)}/s, ${(rate / TIME_SCALE).toFixed(1)}/s in wall time;` +
      ` ${count} requests over ${SECONDS} s (${(SECONDS / TIME_SCALE).toFixed(0)} s of model time)`,
  );

  const policies: Array<{ name: string; chooser: Chooser; router: () => Router; how: string }> = [
    { name: "metadata-center", chooser: "sidecar", router: () => new SidecarRouter(ENGINES, schedulingDefaults, mulberry32(SEED)), how: "the sidecar picks (default scheduling)" },
    { name: "round-robin", chooser: "round-robin", router: () => new RoundRobinRouter(ENGINES), how: "the client names the engines in turn, a subset hint of one; same sidecar and path" },
  ];
  const rows: Array<{ name: string; real: Summary; virtual: Summary; run: LiveRun; gaps: number[] }> = [];
  // The same list through the same pick path in this process, alone: the code's cost, before the machine's.
  const fakeEngines = Array.from({ length: ENGINES }, (_, i) => `127.0.0.1:${9001 + i}`);
  const alone = (await picksAlone(parseConfig(sidecarConfig(fakeEngines), "bench"), requests.map((request) => Buffer.from(requestBody(request, MODEL))))).sort((a, b) => a - b);
  const aloneWithin = alone.filter((ms) => ms <= PICK_TARGET_MS).length / alone.length;
  console.log(
    `the same ${alone.length} requests picked in this process one at a time, nothing else running (the sidecar's defaults, its memory store): ` +
      `p50 ${quantile(alone, 0.5).toFixed(2)} / p90 ${quantile(alone, 0.9).toFixed(2)} / p99 ${quantile(alone, 0.99).toFixed(2)} ms, ${(aloneWithin * 100).toFixed(1)} % within ${PICK_TARGET_MS} ms` +
      ` (p99 ≤ ${PICK_TARGET_MS} ms: ${verdict(quantile(alone, 0.99) <= PICK_TARGET_MS)})`,
  );
  const setups: Setup[] = [];
  try {
    for (const _ of policies) setups.push(await setUp());
    for (const [index, policy] of policies.entries()) {
      console.log(`\n  ${policy.name}: ${policy.how}`);
      const run = await live(setups[index]!, policy.chooser, requests, warmUp);
    const virtualOutcomes = await runWorkload(models, policy.router(), requests);
    const virtualTtft = new Map(virtualOutcomes.map((o) => [o.id, o.firstTokenMs - o.arrivalMs]));
    // Per request, wall ms: what the hops, the tokenizers and this machine add to the model's time.
    const gaps = run.outcomes.map((o) => (o.firstTokenMs - o.arrivalMs - virtualTtft.get(o.id)!) * TIME_SCALE).sort((a, b) => a - b);
      rows.push({ name: policy.name, real: summarize(run.outcomes, ENGINES, outputTokens), virtual: summarize(virtualOutcomes, ENGINES, outputTokens), run, gaps });
      console.log(`    done in ${run.seconds.toFixed(0)} s`);
    }
  } finally {
    await Promise.all(setups.map(tearDown));
  }

  console.log(`\n  TTFT, model ms (wall ÷ ${TIME_SCALE}): mean / p50 / p99, end-to-end p99, imbalance; the virtual-time run of the same list and model beside it`);
  console.log(`    ${"".padEnd(16)} ${"real time".padEnd(42)} virtual time`);
  for (const { name, real, virtual } of rows) {
    console.log(
      `    ${name.padEnd(16)} ${ttfts(real)} ${f(real.e2eP99 / 1000)} s ${real.imbalance.toFixed(2)}    ${ttfts(virtual)} ${f(virtual.e2eP99 / 1000)} s ${virtual.imbalance.toFixed(2)}`,
    );
  }
  const ours = rows[0]!;
  const baseline = rows[1]!;
  const better = (a: Summary, b: Summary): string => `mean ${(b.ttft.mean / a.ttft.mean).toFixed(2)}×, p99 ${(b.ttft.p99 / a.ttft.p99).toFixed(2)}×`;
  console.log(`    ${ours.name} against ${baseline.name}: real time ${better(ours.real, baseline.real)}; virtual time ${better(ours.virtual, baseline.virtual)} better`);

  console.log(`\n  pick latency inside the sidecar (${PICK_HISTOGRAM}, body end → routing reply; histogram bucket bounds):`);
  for (const { name, run } of rows) {
    console.log(
      `    ${name.padEnd(16)} p50 ≤ ${run.pick.p50} ms, p99 ≤ ${run.pick.p99} ms, ${(run.pick.withinTarget * 100).toFixed(1)} % within ${PICK_TARGET_MS} ms (target p99 ≤ ${PICK_TARGET_MS} ms: ${verdict(run.pick.p99 <= PICK_TARGET_MS)});` +
        ` the sidecar's event loop delayed p99 ${run.sidecarLoop.p99.toFixed(1)} / max ${run.sidecarLoop.max.toFixed(0)} ms`,
    );
  }
  console.log(
    `\n  the machine's share: real minus virtual TTFT per request (wall ms: the hops, this machine, and batches formed a little differently), engine steps applied late, this process's event-loop delay, the sidecar's CPU`,
  );
  for (const { name, run, gaps } of rows) {
    const late = run.outcomes.map((o) => o.sendLateMs).sort((a, b) => a - b);
    console.log(
      `    ${name.padEnd(16)} TTFT gap p50 ${quantile(gaps, 0.5).toFixed(0)} / p99 ${quantile(gaps, 0.99).toFixed(0)} ms; sends late p99 ${quantile(late, 0.99).toFixed(1)} ms;` +
        ` steps late mean ${run.stepsLate.mean.toFixed(2)} / max ${run.stepsLate.max.toFixed(0)} ms; loop delay p99 ${run.loopDelay.p99.toFixed(1)} / max ${run.loopDelay.max.toFixed(0)} ms;` +
        ` sidecar ${run.sidecarCpuSeconds.toFixed(1)} s CPU (${((run.sidecarCpuSeconds / run.seconds) * 100).toFixed(0)} % of a core); prefix cache served ${run.cachedPromptTokens} prompt tokens`,
    );
  }
  console.log(`\nmachine: ${machine()}\n${((performance.now() - started) / 1000).toFixed(0)} s`);
}

await main();
