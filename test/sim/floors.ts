import { EngineScheduler, type EngineModel } from "../engine-sim/scheduler.js";
import { quantile } from "./run.js";
import type { SimRequest } from "./routers.js";

/** Mean and p99 of a list of TTFTs (ms). */
export interface Spread {
  mean: number;
  p99: number;
}

function spread(values: readonly number[]): Spread {
  return { mean: values.reduce((a, b) => a + b, 0) / values.length, p99: quantile([...values].sort((a, b) => a - b), 0.99) };
}

/** Each request's prompt tokens left to prefill when the engine holds every block an earlier request of the list produced. */
export function uncachedTokens(model: EngineModel, requests: readonly SimRequest[]): number[] {
  const seen = new Set<string>();
  return requests.map(({ promptTokens, blockHashes }) => {
    let hits = 0;
    while (hits < blockHashes.length && seen.has(blockHashes[hits]!)) hits += 1;
    for (const hash of blockHashes) seen.add(hash);
    return promptTokens - Math.min(hits, Math.floor((promptTokens - 1) / model.blockSize)) * model.blockSize;
  });
}

/** The TTFT of a prompt of `tokens` alone on an idle engine of this model, nothing cached. */
export function aloneTtft(model: EngineModel): (tokens: number) => number {
  const known = new Map<number, number>();
  return (tokens) => {
    let ttft = known.get(tokens);
    if (ttft !== undefined) return ttft;
    const engine = new EngineScheduler({ ...model, prefixCaching: false });
    engine.add({ id: "alone", promptTokens: tokens, blockHashes: [], outputTokens: 1 });
    ttft = 0;
    for (;;) {
      const step = engine.step();
      ttft += step.durationMs;
      if (step.firstTokens.length > 0) break;
    }
    known.set(tokens, ttft);
    return ttft;
  };
}

/**
 * The floor no router can beat, request by request: each one alone on an idle engine. Cold:
 * nothing cached. Warm: the engine holds every block an earlier request of the list produced.
 */
export function aloneFloor(model: EngineModel, requests: readonly SimRequest[]): { cold: Spread; warm: Spread } {
  const alone = aloneTtft(model);
  const uncached = uncachedTokens(model, requests);
  return { cold: spread(requests.map((r) => alone(r.promptTokens))), warm: spread(uncached.map(alone)) };
}

/**
 * The floor a queue sets, for a perfect router holding one queue for the whole cluster: each of
 * `engines` engines prefills at its full token budget's rate (no decode, no hop), a request's
 * uncached prompt is its work and runs on one engine, and no request beats its time alone on an
 * engine. `firstCome` sends each request, in arrival order, to the engine free first: the order
 * that keeps the longest wait short (its p99 is the tail's floor). `shortestFirst` always runs the
 * requests with the least work left, pre-empting: the order that makes the mean smallest (its mean
 * is the mean's floor).
 */
export function queueingFloor(model: EngineModel, engines: number, requests: readonly SimRequest[]): { firstCome: Spread; shortestFirst: Spread } {
  const { tokenBudget, stepBaseMs, prefillMsPerToken } = model;
  const rate = tokenBudget / (stepBaseMs + tokenBudget * prefillMsPerToken);
  const work = uncachedTokens(model, requests);
  const alone = aloneTtft(model);
  const order = requests.map((_, i) => i).sort((a, b) => requests[a]!.arrivalMs - requests[b]!.arrivalMs);
  const ttft = (done: readonly number[]): number[] => done.map((at, i) => Math.max(at - requests[i]!.arrivalMs, alone(work[i]!)));

  const firstCome = new Array<number>(requests.length);
  const freeAt = new Array<number>(engines).fill(0);
  for (const i of order) {
    const engine = freeAt.indexOf(Math.min(...freeAt));
    freeAt[engine] = Math.max(freeAt[engine]!, requests[i]!.arrivalMs) + work[i]! / rate;
    firstCome[i] = freeAt[engine]!;
  }

  const shortestFirst = new Array<number>(requests.length);
  let active: Array<{ index: number; left: number }> = [];
  let now = 0;
  let next = 0;
  while (next < order.length || active.length > 0) {
    if (active.length === 0) now = Math.max(now, requests[order[next]!]!.arrivalMs);
    while (next < order.length && requests[order[next]!]!.arrivalMs <= now) {
      const index = order[next++]!;
      active.push({ index, left: work[index]! });
    }
    active.sort((a, b) => a.left - b.left);
    const running = active.slice(0, engines);
    // Until the next arrival or the first of the running to be done (that one exactly, whatever the rounding).
    const arrival = next < order.length ? requests[order[next]!]!.arrivalMs : Infinity;
    const done = now + running[0]!.left / rate;
    const until = Math.min(arrival, done);
    for (const job of running) job.left = Math.max(0, job.left - (until - now) * rate);
    if (done <= arrival) running[0]!.left = 0;
    now = until;
    for (const job of running) if (job.left === 0) shortestFirst[job.index] = now;
    active = active.filter((job) => job.left > 0);
  }
  return { firstCome: spread(ttft(firstCome)), shortestFirst: spread(ttft(shortestFirst)) };
}
