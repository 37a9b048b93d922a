import { describe, expect, it } from "vitest";
import type { EngineModel } from "../engine-sim/scheduler.js";
import { schedulingDefaults } from "../support/scheduling.js";
import { AigwRouter, GieDefaultRouter, PolledLeastRequestsRouter, RandomRouter, RoundRobinRouter, SglangCacheAwareRouter } from "./peers.js";
import { mulberry32 } from "../support/random.js";
import { SidecarRouter, type Router } from "./routers.js";
import { runWorkload, summarize } from "./run.js";
import { BLOCK_TOKENS, blockHashes, chat, hotPrefix, mixed, rag, sharedPrefix, WORKLOADS } from "./workloads.js";

const model: EngineModel = {
  tokenBudget: 2048,
  maxRunning: 256,
  kvBlocks: 8192,
  blockSize: 16,
  prefixCaching: true,
  stepBaseMs: 5.75,
  decodeMsPerSequence: 0.006,
  prefillMsPerToken: 0.01725,
};

describe("workloads", () => {
  it("chains block hashes: prompts share exactly the blocks of their common leading tokens", () => {
    const a = blockHashes([{ id: "sys", tokens: 40 }, { id: "q1", tokens: 30 }]);
    const b = blockHashes([{ id: "sys", tokens: 40 }, { id: "q2", tokens: 30 }]);
    expect(a).toHaveLength(4);
    expect(a.slice(0, 2)).toEqual(b.slice(0, 2));
    expect(a[2]).not.toBe(b[2]);
    expect(new Set([...a, ...b]).size).toBe(6);
  });

  it("are the same list for the same seed, at the mean rate asked, bursts included, with lengths in their ranges", () => {
    for (const workload of WORKLOADS) {
      const requests = workload.requests(3000, { rate: 50, bursts: { on: 2, off: 4 } }, 3);
      expect(workload.requests(3000, { rate: 50, bursts: { on: 2, off: 4 } }, 3)).toEqual(requests);
      const seconds = requests.at(-1)!.arrivalMs / 1000;
      expect(3000 / seconds).toBeGreaterThan(40);
      expect(3000 / seconds).toBeLessThan(60);
    }
    const prompts = (list: { promptTokens: number }[]) => list.map((r) => r.promptTokens);
    expect(Math.max(...prompts(chat.requests(2000, { rate: 10 }, 1)))).toBeLessThanOrEqual(1024);
    expect(Math.min(...prompts(rag.requests(500, { rate: 10 }, 1)))).toBeGreaterThanOrEqual(4096);
    expect(prompts(mixed.requests(2000, { rate: 10 }, 1)).filter((tokens) => tokens >= 2048).length).toBeGreaterThan(300);
    const shared = sharedPrefix.requests(500, { rate: 10 }, 1);
    const firstBlocks = new Set(shared.map((r) => r.blockHashes[0]));
    expect(firstBlocks.size).toBeLessThanOrEqual(16);
    // One hot prefix: every request's first 4,096 tokens are the same blocks, and nothing after them is shared.
    const hot = hotPrefix.requests(500, { rate: 10 }, 1);
    const systemBlocks = 4096 / BLOCK_TOKENS;
    expect(new Set(hot.map((r) => r.blockHashes.slice(0, systemBlocks).join())).size).toBe(1);
    expect(new Set(hot.map((r) => r.blockHashes[systemBlocks])).size).toBe(hot.filter((r) => r.blockHashes.length > systemBlocks).length);
  });
});

describe("the peers' policies in virtual time", () => {
  it("each places every request and ends with nothing left open; prefix-aware ones send a conversation's turns back to the engine holding its history", async () => {
    const engines = 4;
    const models = Array.from({ length: engines }, () => model);
    const requests = sharedPrefix.requests(600, { rate: 20 }, 5);
    const routers: Router[] = [
      new SidecarRouter(engines, schedulingDefaults, mulberry32(1)),
      new RandomRouter(engines, mulberry32(2)),
      new RoundRobinRouter(engines),
      new PolledLeastRequestsRouter(engines, mulberry32(3)),
      new GieDefaultRouter(engines, model.kvBlocks, mulberry32(4)),
      new AigwRouter(engines, mulberry32(5)),
      new SglangCacheAwareRouter(engines, mulberry32(6)),
    ];
    const cachedShare = new Map<string, number>();
    for (const router of routers) {
      const outcomes = await runWorkload(models, router, requests);
      expect(summarize(outcomes, engines, 0).requests).toBe(600);
      const prompt = outcomes.reduce((sum, o) => sum + o.promptTokens, 0);
      cachedShare.set(router.name, outcomes.reduce((sum, o) => sum + o.cachedTokens, 0) / prompt);
    }
    expect(cachedShare.get("sglang-cache-aware")).toBeGreaterThan(cachedShare.get("random")!);
    expect(cachedShare.get("gie-default")).toBeGreaterThan(cachedShare.get("random")!);
  }, 60_000);
});
