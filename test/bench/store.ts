// `npm run bench:store` (issue #10): the load store under the sidecar's exchanges, memory against
// Redis on loopback (composed as production composes it), for pools of 8, 100 and 1,000 engines
// with 500 exchanges open; then the Redis pick under contention from 3 replica processes, the
// Lua PICK against a guarded reserve. A benchmark, not a test: it prints its figures and
// met/MISSED. BENCH_SECONDS (default 8) is each phase's measured time; BENCH_SECONDS=1 is a smoke run.
import { redisMissing, startRedis } from "../support/redis.js";
import { runContention, type ContentionFigures, type ContentionSettings } from "./store/contention.js";
import { driftTotal, runExchangePhase, type Drift, type Phase, type PhaseFigures, type PhaseSettings, type StoreKind } from "./store/exchanges.js";
import { machine } from "./report.js";
import { calibration, count, ms, quantile, verdict } from "./store/figures.js";
import { countCommandsSent, RedisProbe, totalOf } from "./store/redis-probe.js";
import type { PickMethod } from "./store/replica.js";

const SECONDS = Number(process.env["BENCH_SECONDS"] ?? 8);
const POOL_SIZES = [8, 100, 1000] as const;
/** Pool sizes the pick latency target names. */
const LATENCY_TARGET_SIZES: readonly number[] = [8, 100];
const PICK_P99_TARGET_MS = 2;
const EXCHANGES_PER_SECOND_TARGET = 1000;

const PHASES: readonly Phase[] = [
  // ~0.5 s exchanges: 500 open at ~1,000 exchanges/s, the rate the targets name, with the default timeoutMs.
  { name: "paced", durationMs: [250, 750], timeoutMs: 50 },
  // Short exchanges: 500 open ask more than the store can give, so this finds its capacity; a
  // timeout far above Redis's queue keeps the fail-open store from answering in its stead.
  { name: "saturated", durationMs: [5, 40], timeoutMs: 30_000 },
];
const phaseSettings: PhaseSettings = { open: 500, warmUpMs: Math.min(2, SECONDS / 4) * 1000, measureMs: SECONDS * 1000 };

const contentionSettings: ContentionSettings = { replicas: 3, roundPicks: 200, seconds: SECONDS / 4 };
/** Picks under way per replica: 1, a sidecar's usual (a pick lasts well under a ms at 1,000/s); 8, a burst. */
const IN_FLIGHT = [1, 8] as const;
const METHODS: readonly PickMethod[] = ["lua", "guarded", "unguarded"];
/** The control without the guard runs at the burst only, where a race shows most. */
const CONTROL_IN_FLIGHT = 8;
const METHOD_NAMES: Record<PickMethod, string> = {
  lua: "Lua PICK",
  guarded: "guarded reserve",
  unguarded: "unguarded (control)",
};

/** Commands sent per exchange, by what they do (the store's scripts by name). */
function commandMix(sent: ReadonlyMap<string, number>): string {
  const shown = [...sent].filter(([, value]) => value >= 0.005).sort(([, a], [, b]) => b - a);
  return shown.map(([label, value]) => `${label} ${value.toFixed(2)}`).join(", ");
}

/** 0, or what is left, counter by counter. */
function driftOf(drift: Drift): string {
  if (driftTotal(drift) === 0) return "0";
  return `(${Object.entries(drift).map(([counter, value]) => `${counter} ${count(value)}`).join(", ")})`;
}

function phaseLine(figures: PhaseFigures): string {
  const { pick, redis } = figures;
  const fallback = figures.kind === "redis" ? `  fallbacks ${figures.fallbacks} (local ${(figures.localShare * 100).toFixed(0)} % of the time)` : "";
  const settled = figures.settleMs >= 100 ? ` after ${(figures.settleMs / 1000).toFixed(1)} s` : "";
  const line =
    `  ${figures.kind.padEnd(6)} ${String(figures.engines).padStart(4)} engines  ${figures.phase.name.padEnd(9)} ${count(figures.exchangesPerSecond).padStart(6)} exchanges/s` +
    `  pick p50 ${ms(pick.p50)} p99 ${ms(pick.p99)} max ${ms(pick.max)}  CPU ${figures.cpuUsPerExchange.toFixed(0)} µs/exchange` +
    `${fallback}  refused ${figures.refused}  drift ${driftOf(figures.drift)}${settled}`;
  const { loopDelay, ping } = figures.controls;
  const controls = `${"".padEnd(20)}meanwhile: event loop delay p50 ${ms(loopDelay.p50)} p99 ${ms(loopDelay.p99)}${ping === undefined ? "" : `, a PING on its own connection p50 ${ms(ping.p50)} p99 ${ms(ping.p99)}`}`;
  if (redis === undefined) return `${line}\n${controls}`;
  return (
    `${line}\n${controls}\n${"".padEnd(20)}Redis per exchange: ${totalOf(redis.sentPerExchange).toFixed(2)} commands sent (${commandMix(redis.sentPerExchange)}),` +
    ` ${redis.executedPerExchange.toFixed(0)} executed with those inside scripts, ${redis.cpuUsPerExchange.toFixed(0)} µs Redis CPU`
  );
}

async function exchangeSection(probe: RedisProbe): Promise<PhaseFigures[]> {
  console.log(
    `\n1. exchanges: ${phaseSettings.open} open, each: pick (the whole scheduling chain), first token, 4 SSE events (addGenerated), usage, release;` +
      ` per phase ${phaseSettings.warmUpMs / 1000} s warm-up + ${SECONDS} s measured`,
  );
  for (const phase of PHASES) {
    console.log(`   ${phase.name}: exchanges of ${phase.durationMs[0]}–${phase.durationMs[1]} ms, Redis timeoutMs ${phase.timeoutMs}`);
  }
  const results: PhaseFigures[] = [];
  for (const kind of ["memory", "redis"] as const satisfies readonly StoreKind[]) {
    for (const engines of POOL_SIZES) {
      for (const phase of PHASES) {
        const figures = await runExchangePhase(kind, engines, phase, probe, phaseSettings);
        console.log(phaseLine(figures));
        results.push(figures);
      }
    }
  }
  console.log(storeCpu(results));
  return results;
}

/**
 * The sidecar CPU the Redis store costs beyond the memory store's, exchange for exchange (the loop
 * and the chain are in both); not its cost where the fail-open store picked locally much of the time.
 */
function storeCpu(results: readonly PhaseFigures[]): string {
  const of = (kind: StoreKind, engines: number, phase: Phase): PhaseFigures | undefined =>
    results.find((r) => r.kind === kind && r.engines === engines && r.phase === phase);
  const added = (engines: number, phase: Phase): string => {
    const redis = of("redis", engines, phase);
    const cpu = (redis?.cpuUsPerExchange ?? 0) - (of("memory", engines, phase)?.cpuUsPerExchange ?? 0);
    const local = redis !== undefined && redis.localShare > 0.05 ? ` (local ${(redis.localShare * 100).toFixed(0)} % of the time)` : "";
    return `${phase.name} ${cpu.toFixed(0)}${local}`;
  };
  const sizes = POOL_SIZES.map((engines) => `${engines} engines ${PHASES.map((phase) => added(engines, phase)).join(", ")}`);
  return `  sidecar CPU the Redis store adds per exchange (redis − memory), µs: ${sizes.join("; ")}`;
}

function exchangeTargets(results: readonly PhaseFigures[]): boolean[] {
  const checks: boolean[] = [];
  const check = (met: boolean, line: string): void => {
    checks.push(met);
    console.log(`  ${line} ${verdict(met)}`);
  };
  console.log("\ntargets:");
  const paced = results.filter(({ phase }) => phase.name === "paced");
  for (const figures of paced.filter(({ kind, engines }) => kind === "redis" && LATENCY_TARGET_SIZES.includes(engines))) {
    const rate = count(figures.exchangesPerSecond);
    check(figures.pick.p99 <= PICK_P99_TARGET_MS, `pick p99 ≤ ${PICK_P99_TARGET_MS} ms, redis ${figures.engines} engines at ${rate} exchanges/s (paced): ${ms(figures.pick.p99)}`);
  }
  for (const figures of results.filter(({ phase }) => phase.name === "saturated")) {
    const rate = figures.exchangesPerSecond;
    check(rate >= EXCHANGES_PER_SECOND_TARGET, `≥ ${count(EXCHANGES_PER_SECOND_TARGET)} exchanges/s per sidecar, ${figures.kind} ${figures.engines} engines (saturated): ${count(rate)}`);
  }
  for (const figures of paced.filter(({ kind }) => kind === "redis")) {
    check(figures.fallbacks === 0, `no fallback at timeoutMs 50, redis ${figures.engines} engines (paced): ${figures.fallbacks}`);
  }
  const drift = results.reduce((sum, figures) => sum + driftTotal(figures.drift), 0);
  check(drift === 0, `ledger and counters back to zero after every phase: drift ${drift}`);
  return checks;
}

function contentionLine(figures: ContentionFigures): string {
  return (
    `  ${METHOD_NAMES[figures.method].padEnd(19)} ${String(figures.engines).padStart(4)} engines, ${figures.inFlight} in flight` +
    `  pick p50 ${ms(quantile(figures.latencies, 0.5))} p99 ${ms(quantile(figures.latencies, 0.99))}` +
    `  ${figures.commandsPerPick.toFixed(2)} round trips/pick  retries ${(figures.retriesPerPick * 100).toFixed(1)} %  Redis CPU ${figures.redisCpuUsPerPick.toFixed(0)} µs/pick` +
    `  spread ≤ 1 in ${figures.rounds - figures.roundsOverOne}/${figures.rounds} rounds (worst ${figures.worstSpread})  exhausted ${figures.exhausted}  failed ${figures.failed}  drift ${figures.drift}`
  );
}

async function contentionSection(probe: RedisProbe): Promise<ContentionFigures[]> {
  const { replicas, roundPicks } = contentionSettings;
  console.log(
    `\n2. Redis pick under contention: ${replicas} replica processes picking on one pool; rounds of ${roundPicks} identical picks per replica,` +
      ` the spread (max − min open requests per engine) counted, then all released; at least ${contentionSettings.seconds} s per line`,
  );
  const results: ContentionFigures[] = [];
  for (const engines of POOL_SIZES) {
    for (const inFlight of IN_FLIGHT) {
      for (const method of METHODS.filter((m) => m !== "unguarded" || inFlight === CONTROL_IN_FLIGHT)) {
        const figures = await runContention(method, engines, inFlight, probe, contentionSettings);
        console.log(contentionLine(figures));
        results.push(figures);
      }
    }
  }
  return results;
}

/** Atomic (even spread, never gave up) and by p99, at the sizes and loads the latency target names. */
function contentionVerdict(results: readonly ContentionFigures[]): string {
  const of = (method: PickMethod, engines: number, inFlight: number): ContentionFigures | undefined =>
    results.find((r) => r.method === method && r.engines === engines && r.inFlight === inFlight);
  const p99 = (figures: ContentionFigures | undefined): number => quantile(figures?.latencies ?? [], 0.99);
  const sound = (figures: ContentionFigures | undefined): boolean => figures !== undefined && figures.roundsOverOne === 0 && figures.exhausted === 0;
  const pairs = POOL_SIZES.flatMap((engines) => IN_FLIGHT.map((inFlight) => ({ engines, inFlight, lua: of("lua", engines, inFlight), guarded: of("guarded", engines, inFlight) })));
  const wins = (a: ContentionFigures | undefined, b: ContentionFigures | undefined): boolean => sound(a) && (!sound(b) || p99(a) <= p99(b));
  const judged = pairs.filter(({ engines }) => LATENCY_TARGET_SIZES.includes(engines));
  const keep = judged.every(({ lua, guarded }) => wins(lua, guarded))
    ? "keep the Lua PICK"
    : judged.every(({ lua, guarded }) => wins(guarded, lua))
      ? "the guarded reserve is better"
      : "neither wins everywhere";
  const compared = pairs.map(
    ({ engines, inFlight, lua, guarded }) =>
      `${engines} engines ×${inFlight}: p99 ${ms(p99(lua))} vs ${ms(p99(guarded))}, round trips ${lua?.commandsPerPick.toFixed(2)} vs ${guarded?.commandsPerPick.toFixed(2)},` +
      ` Redis CPU ${lua?.redisCpuUsPerPick.toFixed(0)} vs ${guarded?.redisCpuUsPerPick.toFixed(0)} µs/pick, guarded retries ${((guarded?.retriesPerPick ?? 0) * 100).toFixed(0)} %` +
      `${guarded !== undefined && guarded.exhausted > 0 ? ` (gave up on ${guarded.exhausted} picks)` : ""}`,
  );
  const control = Math.max(...results.filter((r) => r.method === "unguarded").map((r) => r.worstSpread));
  const teeth = control > 1 ? `without the guard the spread reaches ${control}: the check catches a race` : "without the guard no spread > 1 was seen: too little contention to tell";
  return (
    `verdict (Lua PICK vs guarded reserve, judged at ${LATENCY_TARGET_SIZES.join(" and ")} engines): ${keep}\n  ${compared.join("\n  ")}\n  ${teeth}`
  );
}

async function main(): Promise<void> {
  if (redisMissing !== undefined) throw new Error(redisMissing);
  const started = performance.now();
  countCommandsSent();
  const redis = await startRedis();
  const probe = new RedisProbe(redis.url);
  try {
    console.log("bench:store — the load store under the sidecar's exchanges, memory and Redis (issue #10)");
    console.log(`machine: ${machine()}; Redis ${await probe.version()} on loopback`);
    const pings = await probe.pingTimes(2000);
    console.log(`calibration: ${calibration()}; a PING round trip to Redis: p50 ${ms(quantile(pings, 0.5))} p99 ${ms(quantile(pings, 0.99))}`);
    const exchanges = await exchangeSection(probe);
    const checks = exchangeTargets(exchanges);
    const contention = await contentionSection(probe);
    console.log(contentionVerdict(contention));
    const missed = checks.filter((met) => !met).length;
    console.log(`\n${missed === 0 ? "all targets met" : `${missed} target(s) missed`}; ${((performance.now() - started) / 1000).toFixed(0)} s`);
  } finally {
    probe.close();
    await redis.stop();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
