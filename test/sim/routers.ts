import { MemoryLoadStore } from "../../src/load/memory-store.js";
import { PoolDirectory } from "../../src/pools/pools.js";
import { Picker, type Forecast, type PickerSettings } from "../../src/scheduling/picker.js";
import { PickQueue, type QueueSettings } from "../../src/scheduling/queue.js";
import { EngineSteps } from "../../src/scheduling/engine-steps.js";
import type { EngineRequest } from "../engine-sim/scheduler.js";
import { BLOCK_TOKENS } from "./workloads.js";

/** One request of a workload: what the engine needs, and when it arrives (virtual ms). */
export interface SimRequest extends EngineRequest {
  readonly arrivalMs: number;
}

/** A routing policy driven by the cluster simulator: it places each request and hears how it goes. */
export interface Router {
  readonly name: string;
  /** Where the policy's description comes from, printed beside its results. */
  readonly source: string;
  /** The engine (index) for this request. */
  route(request: SimRequest, now: number): number | Promise<number>;
  /** Its route may wait for an engine to free (a queue): the simulation goes on meanwhile. */
  readonly holds?: boolean;
  firstToken(id: string, now: number): void;
  tokens(id: string, count: number, now: number): void;
  finished(id: string, now: number): void;
}

/** The engine address a simulated engine index stands for. */
export const engineAddress = (index: number): string => `10.0.${index >> 8}.${index & 255}:8000`;

/**
 * The sidecar's own picking: the real scheduling chain over the embedded store, fed what the
 * sidecar sees on the wire (the pick, the first token, each token, the end) and nothing polled.
 */
export class SidecarRouter implements Router {
  readonly name: string;
  readonly source = "metadata-center (this repository's scheduling chain and memory store)";
  private readonly store = new MemoryLoadStore();
  private readonly picker: Picker;
  private readonly engineIndex = new Map<string, number>();
  /** The workload's block names as the numbers the sidecar's prompt hashes are. */
  private readonly blockNumbers = new Map<string, number>();
  /** Each open request's TTFT forecast and the time of its pick, told at its first token as the sidecar tells it. */
  private readonly forecasts = new Map<string, { forecast: Forecast; pickedAt: number }>();

  /** The sidecar's queue, when the settings hold requests (`queue`): it waits for first tokens and releases, never for a timer. */
  private readonly queue: PickQueue | undefined;
  readonly holds: boolean;
  /** The virtual time of the last event this router heard of: the queue's clock, and the step rhythm's. */
  private clock = 0;
  /** Each open request's engine, whose rhythm its streamed tokens show. */
  private readonly engineOf = new Map<string, string>();
  private readonly steps = new EngineSteps(() => this.clock);

  constructor(engines: number, settings: PickerSettings, random: () => number, name = "metadata-center", queue?: Pick<QueueSettings, "agingMs">) {
    this.name = name;
    const endpoints = Array.from({ length: engines }, (_, i) => engineAddress(i));
    endpoints.forEach((endpoint, i) => this.engineIndex.set(endpoint, i));
    const directory = new PoolDirectory([{ name: "pool", models: ["*"], endpoints }]);
    this.picker = new Picker(this.store, () => directory, settings, { random, steps: this.steps });
    this.holds = queue !== undefined;
    if (queue === undefined) return;
    const never = 2 ** 31 - 1;
    const unbounded = { maxRequests: Number.MAX_SAFE_INTEGER, maxBytes: Number.MAX_SAFE_INTEGER, maxWaitMs: never, retryMs: never, priorities: {} };
    const events = { held: () => undefined, waited: () => undefined, failed: (error: unknown) => { throw error; } };
    this.queue = new PickQueue(() => this.picker, { ...unbounded, ...queue }, events, () => this.clock);
  }

  async route(request: SimRequest, now: number): Promise<number> {
    this.clock = now;
    const prefix = this.picker.usesPrefix ? request.blockHashes.map((hash) => this.blockNumber(hash)) : undefined;
    const prefixBlockTokens = prefix === undefined ? undefined : BLOCK_TOKENS;
    const asked = { id: request.id, model: undefined, promptTokens: request.promptTokens, prefix, prefixBlockTokens };
    const result = this.queue === undefined ? await this.picker.pick(asked) : await this.queue.pick({ ...asked, priorityHint: undefined, bytes: 0 });
    if (result.kind !== "picked") throw new Error(`the sidecar's picker refused ${request.id}: ${result.kind}`);
    this.forecasts.set(request.id, { forecast: result.forecast, pickedAt: this.clock });
    this.engineOf.set(request.id, result.reservation.engine);
    return this.engineIndex.get(result.reservation.engine)!;
  }

  private blockNumber(hash: string): number {
    let number = this.blockNumbers.get(hash);
    if (number === undefined) this.blockNumbers.set(hash, (number = this.blockNumbers.size));
    return number;
  }

  firstToken(id: string, now: number): void {
    this.clock = now;
    this.store.firstToken(id);
    this.queue?.wake();
    const open = this.forecasts.get(id);
    if (open === undefined) return;
    this.forecasts.delete(id);
    open.forecast.seen(now - open.pickedAt);
    this.forecastErrors.push(Math.abs(now - open.pickedAt - open.forecast.predictedMs));
  }

  tokens(id: string, count: number, now: number): void {
    this.clock = now;
    this.store.addGenerated(id, count);
    const engine = this.engineOf.get(id);
    if (engine !== undefined) this.steps.seen(engine);
  }

  finished(id: string, now: number): void {
    this.clock = now;
    this.store.release(id, "ok");
    this.forecasts.delete(id);
    this.engineOf.delete(id);
    this.queue?.wake();
  }

  /** |observed − predicted| TTFT of each first token, ms, in order. */
  readonly forecastErrors: number[] = [];

  /** Open reservations: zero once every request has ended. */
  get open(): number {
    return this.store.size();
  }
}
