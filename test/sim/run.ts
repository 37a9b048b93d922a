import type { EngineModel } from "../engine-sim/scheduler.js";
import { VirtualCluster } from "./cluster.js";
import { EventQueue } from "./events.js";
import { isPolling, RoundRobinRouter } from "./peers.js";
import type { Router, SimRequest } from "./routers.js";
import type { Workload } from "./workloads.js";

/** How one request went (virtual ms). */
export interface RequestOutcome {
  id: string;
  engine: number;
  arrivalMs: number;
  firstTokenMs: number;
  finishedMs: number;
  promptTokens: number;
  cachedTokens: number;
}

/** Runs one request list through one router over engines of these models, in virtual time. */
export async function runWorkload(models: readonly EngineModel[], router: Router, requests: readonly SimRequest[]): Promise<RequestOutcome[]> {
  const events = new EventQueue();
  const open = new Map<string, RequestOutcome>();
  const done: RequestOutcome[] = [];
  const cluster = new VirtualCluster(events, models, {
    firstToken(id, _engine, now) {
      open.get(id)!.firstTokenMs = now;
      router.firstToken(id, now);
    },
    tokens(id, _engine, count, now) {
      router.tokens(id, count, now);
    },
    finished(id, _engine, now, cachedTokens) {
      const outcome = open.get(id)!;
      open.delete(id);
      outcome.finishedMs = now;
      outcome.cachedTokens = cachedTokens;
      done.push(outcome);
      router.finished(id, now);
    },
  });
  let failure: unknown;
  for (const request of requests) {
    events.at(request.arrivalMs, async () => {
      const arrivalMs = events.now;
      // Sent when placed: at once, or (a router that holds) at the event that let it go.
      const place = (engine: number): void => {
        open.set(request.id, { id: request.id, engine, arrivalMs, firstTokenMs: NaN, finishedMs: NaN, promptTokens: request.promptTokens, cachedTokens: 0 });
        cluster.submit(engine, request);
      };
      if (router.holds !== true) return place(await router.route(request, arrivalMs));
      Promise.resolve(router.route(request, arrivalMs)).then(place, (error: unknown) => (failure ??= error));
    });
  }
  if (isPolling(router)) {
    // The gauges as of each poll, until the last request has ended.
    const poll = (): void => {
      router.observe(cluster.engines.map((_, engine) => cluster.metrics(engine)));
      if (done.length < requests.length) events.at(events.now + router.pollMs, poll);
    };
    events.at(0, poll);
  }
  await events.drain(router.holds === true);
  if (failure !== undefined) throw failure;
  if (open.size > 0 || done.length < requests.length) throw new Error(`${requests.length - done.length} requests never finished`);
  return done;
}

/** Requests per second (model time) the engines complete when `count` of the workload are there at once (round robin): their capacity for it. */
export async function capacity(models: readonly EngineModel[], workload: Workload, count: number, seed: number): Promise<number> {
  const outcomes = await runWorkload(models, new RoundRobinRouter(models.length), workload.requests(count, { rate: 1e9 }, seed));
  return outcomes.length / (Math.max(...outcomes.map((o) => o.finishedMs)) / 1000);
}

export interface Summary {
  requests: number;
  ttft: { mean: number; p50: number; p90: number; p99: number };
  e2eP99: number;
  /** Output tokens per second over the run. */
  throughput: number;
  /** Largest engine's share of requests over the mean share (1 = even). */
  imbalance: number;
}

export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

export function summarize(
  outcomes: ReadonlyArray<Pick<RequestOutcome, "engine" | "arrivalMs" | "firstTokenMs" | "finishedMs">>,
  engines: number,
  outputTokens: number,
): Summary {
  const ttft = outcomes.map((o) => o.firstTokenMs - o.arrivalMs).sort((a, b) => a - b);
  const e2e = outcomes.map((o) => o.finishedMs - o.arrivalMs).sort((a, b) => a - b);
  const start = Math.min(...outcomes.map((o) => o.arrivalMs));
  const end = Math.max(...outcomes.map((o) => o.finishedMs));
  const perEngine = Array.from({ length: engines }, (_, i) => outcomes.filter((o) => o.engine === i).length);
  return {
    requests: outcomes.length,
    ttft: { mean: ttft.reduce((a, b) => a + b, 0) / ttft.length, p50: quantile(ttft, 0.5), p90: quantile(ttft, 0.9), p99: quantile(ttft, 0.99) },
    e2eP99: quantile(e2e, 0.99),
    throughput: outputTokens / ((end - start) / 1000),
    imbalance: Math.max(...perEngine) / (outcomes.length / engines),
  };
}
