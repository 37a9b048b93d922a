import { describe, expect, it } from "vitest";
import { LLAMA_8B_H100 } from "../engine-sim/models.js";
import type { EngineModel } from "../engine-sim/scheduler.js";
import { aloneFloor, queueingFloor, uncachedTokens } from "./floors.js";
import type { SimRequest } from "./routers.js";
import { rag } from "./workloads.js";

// 100 tokens a step, 1 ms a step: an engine prefills 100 tokens per ms.
const model: EngineModel = {
  tokenBudget: 100,
  maxRunning: 8,
  kvBlocks: 1 << 16,
  blockSize: 16,
  prefixCaching: true,
  stepBaseMs: 0,
  decodeMsPerSequence: 0,
  prefillMsPerToken: 0.01,
};
const request = (id: string, arrivalMs: number, promptTokens: number, blockHashes: string[] = []): SimRequest => ({ id, arrivalMs, promptTokens, blockHashes, outputTokens: 1 });

describe("the routing floors", () => {
  it("count only what an engine holding every earlier block would prefill, and always the last token", () => {
    const requests = [request("a", 0, 40, ["x", "y"]), request("b", 1, 40, ["x", "z"]), request("c", 2, 32, ["x", "y"])];
    // b shares one block with a; c's every block is cached, but its last token is computed: one block is redone.
    expect(uncachedTokens(model, requests)).toEqual([40, 24, 16]);
    expect(aloneFloor(model, requests).warm.mean).toBeCloseTo((0.4 + 0.24 + 0.16) / 3);
    expect(aloneFloor(model, requests).cold.mean).toBeCloseTo((0.4 + 0.4 + 0.32) / 3);
  });

  it("serve the cluster as one machine: first come first served for the tail, shortest remaining first for the mean", () => {
    // A long prompt, then a short one a millisecond later, on one engine.
    const requests = [request("long", 0, 1000), request("short", 1, 100)];
    const { firstCome, shortestFirst } = queueingFloor(model, 1, requests);
    // In order, the short one waits for the long one: both take 10 ms.
    expect(firstCome).toEqual({ mean: 10, p99: 10 });
    // Shortest first, the short one overtakes (done at 2 ms) and the long one ends at 11.
    expect(shortestFirst.mean).toBeCloseTo(6);
    expect(shortestFirst.p99).toBeCloseTo(11);
    // On two engines the short one has the second to itself: done at 2 ms.
    expect(queueingFloor(model, 2, requests).firstCome).toEqual({ mean: 5.5, p99: 10 });
    expect(queueingFloor(model, 2, requests).shortestFirst.mean).toBeCloseTo(5.5);
    // With a cost per step, the budget's rate (100 tokens per 2 ms) is for full steps: a short prompt alone still pays a whole step's base.
    expect(queueingFloor({ ...model, stepBaseMs: 1 }, 1, [request("short", 0, 10)]).firstCome.mean).toBeCloseTo(1.1);
  });

  it("end on a real list, whose rates are not round numbers: neither order beats the other's own goal, nor the floor alone", () => {
    // This list once left a job a rounding error short of done, forever.
    const requests = rag.requests(2000, { rate: 6.6 }, 1);
    const { firstCome, shortestFirst } = queueingFloor(LLAMA_8B_H100, 4, requests);
    const alone = aloneFloor(LLAMA_8B_H100, requests).warm;
    expect(shortestFirst.mean).toBeLessThanOrEqual(firstCome.mean);
    expect(firstCome.mean).toBeGreaterThanOrEqual(alone.mean);
    expect(shortestFirst.mean).toBeGreaterThanOrEqual(alone.mean);
  });
});
