import { EngineScheduler, type EngineModel, type EngineRequest } from "../engine-sim/scheduler.js";
import type { EventQueue } from "./events.js";

/** What a polling router can read of an engine: vLLM's own gauges (num_requests_running/waiting, KV-cache usage). */
export interface EngineMetrics {
  running: number;
  waiting: number;
  /** Fraction of KV blocks held by requests, in [0, 1]. */
  kvUsage: number;
}

/** What the cluster tells as requests progress (virtual ms). */
export interface ClusterListener {
  firstToken(id: string, engine: number, now: number): void;
  tokens(id: string, engine: number, count: number, now: number): void;
  finished(id: string, engine: number, now: number, cachedTokens: number): void;
}

/** Engines stepping in virtual time: each runs its next step as soon as the last one ends, while it has work. */
export class VirtualCluster {
  readonly engines: EngineScheduler[];
  private readonly stepping: boolean[];
  private readonly cached = new Map<string, number>();

  constructor(
    private readonly events: EventQueue,
    models: readonly EngineModel[],
    private readonly listener: ClusterListener,
  ) {
    this.engines = models.map((model) => new EngineScheduler(model));
    this.stepping = models.map(() => false);
  }

  submit(engine: number, request: EngineRequest): void {
    const scheduler = this.engines[engine];
    if (scheduler === undefined) throw new RangeError(`no engine ${engine}`);
    scheduler.add(request);
    if (!this.stepping[engine]) {
      this.stepping[engine] = true;
      this.events.at(this.events.now, () => this.step(engine));
    }
  }

  metrics(engine: number): EngineMetrics {
    const scheduler = this.engines[engine]!;
    return { running: scheduler.runningCount, waiting: scheduler.waitingCount, kvUsage: scheduler.cache.used / scheduler.cache.blocks };
  }

  private step(engine: number): void {
    const scheduler = this.engines[engine]!;
    if (!scheduler.busy) {
      this.stepping[engine] = false;
      return;
    }
    const result = scheduler.step();
    if (result.durationMs <= 0) throw new Error(`engine ${engine} is busy but scheduled nothing`);
    for (const [id, tokens] of result.admitted) if (!this.cached.has(id)) this.cached.set(id, tokens);
    this.events.at(this.events.now + result.durationMs, () => {
      const now = this.events.now;
      for (const id of result.firstTokens) this.listener.firstToken(id, engine, now);
      for (const [id, count] of result.tokens) this.listener.tokens(id, engine, count, now);
      for (const id of result.finished) {
        this.listener.finished(id, engine, now, this.cached.get(id) ?? 0);
        this.cached.delete(id);
      }
      this.step(engine);
    });
  }
}
