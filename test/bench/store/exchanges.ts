import { monitorEventLoopDelay } from "node:perf_hooks";
import { pino } from "pino";
import { MemoryLoadStore } from "../../../src/load/memory-store.js";
import { openLoadStore } from "../../../src/load/open.js";
import type { LoadStore } from "../../../src/load/store.js";
import { EngineHealth } from "../../../src/pools/health.js";
import { PoolDirectory } from "../../../src/pools/pools.js";
import { Picker } from "../../../src/scheduling/picker.js";
import { quantile, sleep } from "./figures.js";
import { benchConfig, engineAddresses } from "./pool.js";
import { commandsSent, countsSince, type RedisProbe, type ServerCounters } from "./redis-probe.js";

export type StoreKind = "memory" | "redis";

/** How long each exchange lasts: short ones to find the store's capacity, ~0.5 s ones to hold 500 open at ~1,000/s. */
export interface Phase {
  name: "saturated" | "paced";
  durationMs: readonly [min: number, max: number];
  /** The Redis settings' timeoutMs: how long a call may wait before the fail-open store picks locally. */
  timeoutMs: number;
}

/** SSE events after the first token, each one addGenerated call as the lifecycle makes it. */
const GENERATED_EVENTS = 4;

/** What one measured stretch of a loop saw. */
interface Window {
  startedAt: number;
  cpu: NodeJS.CpuUsage;
  picks: number[];
  completed: number;
  refused: number;
}

/**
 * `open` exchanges at all times, each followed at once by the next: every exchange does to the
 * store what the sidecar's lifecycle does (pick through the scheduling chain, first token,
 * generated tokens per SSE event, the engine's usage, release), spread over its duration by timers.
 */
class ExchangeLoop {
  private running = true;
  private sequence = 0;
  private window: Window | undefined;
  private lanes: Array<Promise<void>> = [];

  private constructor(
    private readonly picker: Picker,
    private readonly store: LoadStore,
    private readonly phase: Phase,
  ) {}

  static start(picker: Picker, store: LoadStore, phase: Phase, open: number): ExchangeLoop {
    const loop = new ExchangeLoop(picker, store, phase);
    loop.lanes = Array.from({ length: open }, () => loop.lane());
    return loop;
  }

  private async lane(): Promise<void> {
    // Spread over one exchange's length, as traffic already flowing is: not one burst of 500 picks.
    await sleep(Math.random() * this.phase.durationMs[1]);
    while (this.running) await this.exchange();
  }

  private async exchange(): Promise<void> {
    const id = `${this.phase.name}-${(this.sequence += 1)}`;
    const promptTokens = 100 + Math.floor(Math.random() * 1900);
    const [min, max] = this.phase.durationMs;
    const step = (min + Math.random() * (max - min)) / (GENERATED_EVENTS + 1);
    if (!(await this.pick(id, promptTokens))) return sleep(step);
    await this.respond(id, promptTokens, step);
    if (this.window !== undefined) this.window.completed += 1;
  }

  /** Picker.pick, timed; false when nothing was reserved. */
  private async pick(id: string, promptTokens: number): Promise<boolean> {
    const started = performance.now();
    const picked = await this.picker.pick({ id, model: "bench", promptTokens });
    this.window?.picks.push(performance.now() - started);
    if (picked.kind === "picked") return true;
    if (this.window !== undefined) this.window.refused += 1;
    return false;
  }

  /** The engine's answer as the lifecycle reports it: first token, one addGenerated per SSE event, usage, release. */
  private async respond(id: string, promptTokens: number, step: number): Promise<void> {
    await sleep(step);
    await this.store.firstToken(id);
    let generated = 0;
    for (let event = 0; event < GENERATED_EVENTS; event += 1) {
      await sleep(step);
      const tokens = 1 + Math.floor(Math.random() * 8);
      generated += tokens;
      await this.store.addGenerated(id, tokens);
    }
    await this.store.reconcile(id, { promptTokens, completionTokens: generated });
    await this.store.release(id, "ok");
  }

  measure(): void {
    this.window = { startedAt: performance.now(), cpu: process.cpuUsage(), picks: [], completed: 0, refused: 0 };
  }

  /** The measured stretch so far; it stops counting. */
  measured(): Window & { seconds: number; cpuUs: number } {
    const window = this.window;
    if (window === undefined) throw new Error("measure() first");
    this.window = undefined;
    const cpu = process.cpuUsage(window.cpu);
    return { ...window, seconds: (performance.now() - window.startedAt) / 1000, cpuUs: cpu.user + cpu.system };
  }

  /** No new exchange starts; resolves once every open one has finished. */
  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.lanes);
  }
}

/** What is left in the store once every exchange has finished: all zero when nothing leaked. */
export interface Drift {
  ledger: number;
  requests: number;
  prefillRequests: number;
  prefillTokens: number;
  tokensHeld: number;
}

export const driftTotal = (drift: Drift): number => Object.values(drift).reduce((sum, value) => sum + Math.abs(value), 0);

async function driftOf(store: LoadStore, engines: readonly string[]): Promise<Drift> {
  const drift: Drift = { ledger: await store.size(), requests: 0, prefillRequests: 0, prefillTokens: 0, tokensHeld: 0 };
  for (const load of (await store.loads(engines)).values()) {
    drift.requests += load.requests;
    drift.prefillRequests += load.prefillRequests;
    drift.prefillTokens += load.prefillTokens;
    drift.tokensHeld += load.tokensHeld;
  }
  return drift;
}

/** How often the fail-open store's state is looked at: a fallback lasts at least its retry interval (1 s). */
const WATCH_EVERY_MS = 20;

/** When the fail-open store picked from its own view instead of Redis. */
class FallbackWatch {
  transitions = 0;
  private downSince: number | undefined;
  private localMs = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly shared: { readonly fallback: boolean } | undefined) {
    this.timer = setInterval(() => this.look(), WATCH_EVERY_MS);
  }

  private look(): void {
    const local = this.shared?.fallback ?? false;
    const now = performance.now();
    if (local && this.downSince === undefined) {
      this.transitions += 1;
      this.downSince = now;
    } else if (!local && this.downSince !== undefined) {
      this.localMs += now - this.downSince;
      this.downSince = undefined;
    }
  }

  get down(): boolean {
    this.look();
    return this.downSince !== undefined;
  }

  /** Time spent local so far, a fallback still going on counted up to now. */
  localMsSoFar(): number {
    this.look();
    return this.localMs + (this.downSince === undefined ? 0 : performance.now() - this.downSince);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** How often the control PING goes out while exchanges run. */
const CONTROL_PING_EVERY_MS = 5;

/**
 * What a pick's latency is up against on this machine, measured beside it: how late the event
 * loop runs callbacks, and a PING to the same Redis on a connection of its own (one at a time).
 * A pick cannot come back faster than either.
 */
class Controls {
  private readonly loop = monitorEventLoopDelay({ resolution: 1 });
  private readonly pings: number[] = [];
  private running = true;
  private readonly pinging: Promise<void>;

  constructor(probe: RedisProbe | undefined) {
    this.loop.enable();
    this.pinging = probe === undefined ? Promise.resolve() : this.ping(probe);
  }

  private async ping(probe: RedisProbe): Promise<void> {
    while (this.running) {
      const started = performance.now();
      await probe.admin.ping();
      this.pings.push(performance.now() - started);
      await sleep(CONTROL_PING_EVERY_MS);
    }
  }

  async stop(): Promise<PhaseFigures["controls"]> {
    this.running = false;
    await this.pinging;
    this.loop.disable();
    const loopDelay = { p50: this.loop.percentile(50) / 1e6, p99: this.loop.percentile(99) / 1e6 };
    return { loopDelay, ...(this.pings.length > 0 ? { ping: { p50: quantile(this.pings, 0.5), p99: quantile(this.pings, 0.99) } } : {}) };
  }
}

/** Longest wait, once the exchanges are done, for the fail-open store to be back and its pending releases to land. */
const SETTLE_MS = 5000;

/** The drift once the store had time to settle: a release that waited for Redis to answer again is sent when it does. */
async function settledDrift(store: LoadStore, engines: readonly string[], watch: FallbackWatch): Promise<{ drift: Drift; settleMs: number }> {
  const started = performance.now();
  let drift = await driftOf(store, engines);
  while ((watch.down || driftTotal(drift) > 0) && performance.now() - started < SETTLE_MS) {
    await sleep(100);
    drift = await driftOf(store, engines);
  }
  return { drift, settleMs: performance.now() - started };
}

export interface PhaseFigures {
  kind: StoreKind;
  engines: number;
  phase: Phase;
  exchangesPerSecond: number;
  pick: { p50: number; p99: number; max: number };
  cpuUsPerExchange: number;
  refused: number;
  /** Redis store only: commands sent per exchange by what they do, and what Redis did for them. */
  redis?: { sentPerExchange: Map<string, number>; executedPerExchange: number; cpuUsPerExchange: number };
  /** Times the fail-open store moved picks to its local view during the measured time, and the share of that time spent so. */
  fallbacks: number;
  localShare: number;
  drift: Drift;
  /** How long the drift took to reach its final value after the last exchange. */
  settleMs: number;
  /** Measured beside the picks: the event loop's delay, and (Redis) a PING on its own connection. */
  controls: { loopDelay: Quantiles; ping?: Quantiles };
}

interface Quantiles {
  p50: number;
  p99: number;
}

export interface PhaseSettings {
  open: number;
  warmUpMs: number;
  measureMs: number;
}

/**
 * One store, pool size and phase: the store composed as the sidecar composes it (Redis behind the
 * fail-open store, with its lease), warmed up, measured, drained, its ledger checked.
 */
export async function runExchangePhase(kind: StoreKind, engines: number, phase: Phase, probe: RedisProbe, settings: PhaseSettings): Promise<PhaseFigures> {
  const config = benchConfig(kind, engines, probe.url, phase.timeoutMs);
  // Warnings only (a fallback's reason), on stderr beside the figures.
  const log = pino({ level: "warn", base: null }, pino.destination(2));
  const shared = await openLoadStore(config, log);
  const watch = new FallbackWatch(shared);
  const store = shared?.store ?? new MemoryLoadStore();
  const directory = new PoolDirectory(config.pools);
  const picker = new Picker(store, () => directory, config.scheduling, { availability: new EngineHealth(config.scheduling) });
  try {
    const loop = ExchangeLoop.start(picker, store, phase, settings.open);
    await sleep(settings.warmUpMs);
    const serverBefore = kind === "redis" ? await probe.read() : undefined;
    const before = { transitions: watch.transitions, localMs: watch.localMsSoFar(), sent: commandsSent() };
    const controls = new Controls(kind === "redis" ? probe : undefined);
    loop.measure();
    await sleep(settings.measureMs);
    const window = loop.measured();
    const controlled = await controls.stop();
    const fallbacks = { fallbacks: watch.transitions - before.transitions, localShare: (watch.localMsSoFar() - before.localMs) / (window.seconds * 1000) };
    const sent = countsSince(before.sent);
    const server = serverBefore === undefined ? undefined : await probe.since(serverBefore);
    await loop.stop();
    const settled = await settledDrift(store, engineAddresses(engines), watch);
    return { kind, engines, phase, ...windowFigures(window, sent, server), ...fallbacks, ...settled, controls: controlled };
  } finally {
    watch.stop();
    await shared?.close();
    await probe.empty();
  }
}

function windowFigures(
  window: ReturnType<ExchangeLoop["measured"]>,
  sent: ReadonlyMap<string, number>,
  server: ServerCounters | undefined,
): Pick<PhaseFigures, "exchangesPerSecond" | "pick" | "cpuUsPerExchange" | "refused" | "redis"> {
  const per = (value: number): number => value / Math.max(1, window.completed);
  return {
    exchangesPerSecond: window.completed / window.seconds,
    pick: { p50: quantile(window.picks, 0.5), p99: quantile(window.picks, 0.99), max: quantile(window.picks, 1) },
    cpuUsPerExchange: per(window.cpuUs),
    refused: window.refused,
    ...(server === undefined
      ? {}
      : {
          redis: {
            sentPerExchange: new Map([...sent].map(([label, value]) => [label, per(value)])),
            executedPerExchange: per(server.executed),
            cpuUsPerExchange: per(server.cpuUs),
          },
        }),
  };
}
