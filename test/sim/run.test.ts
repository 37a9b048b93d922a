import { describe, expect, it } from "vitest";
import type { EngineModel } from "../engine-sim/scheduler.js";
import { schedulingDefaults } from "../support/scheduling.js";
import { mulberry32 } from "../support/random.js";
import { SidecarRouter, type Router, type SimRequest } from "./routers.js";
import { runWorkload, summarize } from "./run.js";

const model: EngineModel = {
  tokenBudget: 2048,
  maxRunning: 64,
  kvBlocks: 4096,
  blockSize: 16,
  prefixCaching: true,
  stepBaseMs: 8,
  decodeMsPerSequence: 0.3,
  prefillMsPerToken: 0.06,
};
const ENGINES = 4;

/** Poisson arrivals of mixed prompts, from one seed. */
function workload(seed: number, count: number, ratePerSecond: number): SimRequest[] {
  const random = mulberry32(seed);
  let at = 0;
  return Array.from({ length: count }, (_, i) => {
    at += (-Math.log(1 - random()) / ratePerSecond) * 1000;
    const promptTokens = random() < 0.2 ? 3000 + Math.floor(random() * 3000) : 100 + Math.floor(random() * 700);
    return { id: `r${i}`, arrivalMs: at, promptTokens, blockHashes: [], outputTokens: 20 + Math.floor(random() * 200) };
  });
}

class RandomRouter implements Router {
  readonly name = "random";
  readonly source = "uniform choice";
  constructor(private readonly random: () => number) {}
  route(): number {
    return Math.floor(this.random() * ENGINES);
  }
  firstToken(): void {}
  tokens(): void {}
  finished(): void {}
}

describe("runWorkload (virtual time)", () => {
  it("runs one request list through a router to the end; the sidecar's chain beats random on TTFT and its ledger ends at zero", async () => {
    const requests = workload(7, 2000, 15);
    const models = Array.from({ length: ENGINES }, () => model);
    const ours = new SidecarRouter(ENGINES, schedulingDefaults, mulberry32(1));
    const mine = summarize(await runWorkload(models, ours, requests), ENGINES, 0);
    const random = summarize(await runWorkload(models, new RandomRouter(mulberry32(2)), requests), ENGINES, 0);
    expect(mine.requests).toBe(2000);
    expect(ours.open).toBe(0);
    expect(mine.ttft.mean).toBeLessThan(random.ttft.mean);
    // Same seeds, same run.
    const again = summarize(await runWorkload(models, new SidecarRouter(ENGINES, schedulingDefaults, mulberry32(1)), requests), ENGINES, 0);
    expect(again).toEqual(mine);
  });

  it("runs a router that holds requests: the sidecar's queue lets each go at a first token or a release, in time order, and ends with nothing held or open", async () => {
    // Bursts well over capacity: 300 requests within 2 s.
    const requests = workload(3, 300, 150);
    const models = Array.from({ length: ENGINES }, () => model);
    const queued = new SidecarRouter(ENGINES, { ...schedulingDefaults, maxPrefillRequestsPerEngine: 2 }, mulberry32(1), "queued", { agingMs: 250 });
    expect(queued.holds).toBe(true);
    const outcomes = await runWorkload(models, queued, requests);
    expect(outcomes.length).toBe(300);
    expect(queued.open).toBe(0);
    for (const outcome of outcomes) expect(outcome.firstTokenMs).toBeGreaterThan(outcome.arrivalMs);
    // Holding reordered the prefills: short prompts overtook long ones, so the mean fell against sending each at once.
    const direct = summarize(await runWorkload(models, new SidecarRouter(ENGINES, schedulingDefaults, mulberry32(1)), requests), ENGINES, 0);
    const held = summarize(outcomes, ENGINES, 0);
    expect(held.ttft.mean).toBeLessThan(direct.ttft.mean);
    const again = summarize(await runWorkload(models, new SidecarRouter(ENGINES, { ...schedulingDefaults, maxPrefillRequestsPerEngine: 2 }, mulberry32(1), "queued", { agingMs: 250 }), requests), ENGINES, 0);
    expect(again).toEqual(held);
  });
});
