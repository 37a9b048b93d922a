import { describe, expect, it } from "vitest";
import type { EngineModel } from "../engine-sim/scheduler.js";
import { VirtualCluster } from "./cluster.js";
import { EventQueue } from "./events.js";

const model: EngineModel = {
  tokenBudget: 512,
  maxRunning: 8,
  kvBlocks: 512,
  blockSize: 16,
  prefixCaching: true,
  stepBaseMs: 10,
  decodeMsPerSequence: 0.5,
  prefillMsPerToken: 0.05,
};

describe("EventQueue", () => {
  it("runs events in time order, ties in scheduling order, and those scheduled while draining", async () => {
    const events = new EventQueue();
    const seen: string[] = [];
    events.at(5, () => void seen.push("b"));
    events.at(1, () => {
      seen.push("a");
      events.at(5, () => void seen.push("c"));
    });
    events.at(9, async () => {
      await Promise.resolve();
      seen.push(`d@${events.now}`);
    });
    await events.drain();
    expect(seen).toEqual(["a", "b", "c", "d@9"]);
  });
});

describe("VirtualCluster", () => {
  it("runs every request to its end in virtual time; a busy engine answers later than an idle one", async () => {
    const events = new EventQueue();
    const firstToken = new Map<string, number>();
    const finished = new Map<string, number>();
    const cluster = new VirtualCluster(events, [model, model], {
      firstToken: (id, _engine, now) => void firstToken.set(id, now),
      tokens: () => undefined,
      finished: (id, _engine, now) => void finished.set(id, now),
    });
    const prompt = (id: string, tokens: number) => ({ id, promptTokens: tokens, blockHashes: [], outputTokens: 20 });
    events.at(0, () => {
      for (let i = 0; i < 6; i++) cluster.submit(0, prompt(`busy${i}`, 2000));
      cluster.submit(1, prompt("alone", 2000));
    });
    await events.drain();
    expect(finished.size).toBe(7);
    expect(firstToken.get("alone")).toBeLessThan(firstToken.get("busy5")!);
    expect(cluster.metrics(0)).toEqual({ running: 0, waiting: 0, kvUsage: 0 });
  });
});
