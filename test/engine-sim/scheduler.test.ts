import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { EngineScheduler, type EngineModel, type EngineRequest, type StepResult } from "./scheduler.js";

const model: EngineModel = {
  tokenBudget: 64,
  maxRunning: 4,
  kvBlocks: 64,
  blockSize: 16,
  prefixCaching: true,
  stepBaseMs: 5,
  decodeMsPerSequence: 1,
  prefillMsPerToken: 0.1,
};

/** A prompt of `tokens` tokens whose blocks are named `${prefix}/0`, `${prefix}/1`, … (chained: same prefix, same names). */
const request = (id: string, tokens: number, output: number, prefix = id): EngineRequest => ({
  id,
  promptTokens: tokens,
  blockHashes: Array.from({ length: Math.floor(tokens / 16) }, (_, i) => `${prefix}/${i}`),
  outputTokens: output,
});

/** Steps until idle; each request's first-token and finish time, and every step. */
function drain(engine: EngineScheduler, limit = 10_000): { steps: StepResult[]; firstToken: Map<string, number>; finished: Map<string, number> } {
  const steps: StepResult[] = [];
  const firstToken = new Map<string, number>();
  const finished = new Map<string, number>();
  let now = 0;
  while (engine.busy) {
    if (steps.length >= limit) throw new Error("engine did not drain");
    const step = engine.step();
    if (step.durationMs === 0) throw new Error("a busy engine scheduled nothing");
    now += step.durationMs;
    steps.push(step);
    for (const id of step.firstTokens) firstToken.set(id, now);
    for (const id of step.finished) finished.set(id, now);
  }
  return { steps, firstToken, finished };
}

describe("EngineScheduler (vLLM V1 with chunked prefill)", () => {
  it("prefills a prompt in chunks of the token budget; the pass over its last token gives the first token, then one token per step", () => {
    const engine = new EngineScheduler(model);
    engine.add(request("a", 100, 3));
    const { steps, firstToken, finished } = drain(engine);
    expect(steps.map((step) => [step.prefillTokens, step.decodes])).toEqual([[64, 0], [36, 0], [0, 1], [0, 1]]);
    expect(firstToken.get("a")).toBeCloseTo(5 + 6.4 + 5 + 3.6);
    expect(finished.get("a")).toBeCloseTo(firstToken.get("a")! + 2 * (5 + 1));
    expect(engine.cache.used).toBe(0);
  });

  it("decodes running requests first; a new prompt takes what is left of the budget", () => {
    const engine = new EngineScheduler(model);
    engine.add(request("a", 16, 10));
    engine.step();
    engine.add(request("b", 200, 1));
    const step = engine.step();
    expect([step.decodes, step.prefillTokens]).toEqual([1, 63]);
  });

  it("runs at most maxRunning requests; the others wait in arrival order", () => {
    const engine = new EngineScheduler(model);
    for (const id of ["a", "b", "c", "d", "e"]) engine.add(request(id, 8, 5));
    engine.step();
    expect([engine.runningCount, engine.waitingCount]).toEqual([4, 1]);
    const { firstToken } = drain(engine);
    expect([...firstToken.keys()]).toEqual(["e"]);
  });

  it("serves a repeated prefix from its cache: fewer tokens prefilled, cached_tokens reported, the last token still computed", () => {
    const engine = new EngineScheduler(model);
    engine.add(request("a", 64, 1, "system"));
    drain(engine);
    engine.add(request("b", 64, 1, "system"));
    const step = engine.step();
    // 3 of the 4 blocks hit: the last block holds the token whose pass samples the first token.
    expect(step.prefillTokens).toBe(16);
    expect(step.admitted.get("b")).toBe(48);
    engine.add(request("c", 80, 1, "system"));
    const next = engine.step();
    expect(next.prefillTokens).toBe(16);
    expect(next.admitted.get("c")).toBe(64);
    engine.add(request("d", 80, 1, "other"));
    expect(engine.step().admitted.get("d")).toBe(0);
  });

  it("evicts the least recently freed cached blocks first when it needs room", () => {
    const small = new EngineScheduler({ ...model, kvBlocks: 8, tokenBudget: 256 });
    for (const prefix of ["old", "new"]) {
      small.add(request(prefix, 64, 1, prefix));
      drain(small);
    }
    small.add(request("x", 64, 1, "fresh"));
    drain(small);
    expect(small.cache.cachedPrefix(["old/0", "old/1"])).toBe(0);
    expect(small.cache.cachedPrefix(["new/0", "new/1", "new/2", "new/3"])).toBe(4);
  });

  it("preempts the most recently admitted request when KV blocks run out; it recomputes and every request finishes", () => {
    const tight = new EngineScheduler({ ...model, kvBlocks: 10, prefixCaching: false });
    tight.add(request("a", 64, 40));
    tight.add(request("b", 64, 40));
    const { steps, finished } = drain(tight);
    const preempted = steps.flatMap((step) => step.preempted);
    expect(preempted[0]).toBe("b");
    expect([...finished.keys()].sort()).toEqual(["a", "b"]);
    expect(tight.cache.used).toBe(0);
  });

  it("refuses a request that could never fit its KV cache", () => {
    const engine = new EngineScheduler(model);
    expect(() => engine.add(request("huge", 1020, 10))).toThrow(/do not fit in the KV cache/);
    expect(() => engine.add(request("a", 10, 0))).toThrow(/outputTokens must be ≥ 1/);
  });

  it("for any requests and model: every request finishes with its tokens, steps keep to the budget and maxRunning, and all blocks come back", () => {
    const arbitraryModel = fc.record({
      tokenBudget: fc.integer({ min: 1, max: 300 }),
      maxRunning: fc.integer({ min: 1, max: 8 }),
      kvBlocks: fc.integer({ min: 40, max: 200 }),
      prefixCaching: fc.boolean(),
    });
    const arrivals = fc.array(fc.record({ tokens: fc.integer({ min: 1, max: 300 }), output: fc.integer({ min: 1, max: 40 }), prefix: fc.constantFrom("p", "q", "r"), at: fc.nat(30) }), { minLength: 1, maxLength: 25 });
    fc.assert(
      fc.property(arbitraryModel, arrivals, (shape, requests) => {
        const engine = new EngineScheduler({ ...model, ...shape });
        const produced = new Map<string, number>();
        const pending = requests.map((r, i) => ({ ...r, id: `r${i}` })).sort((a, b) => a.at - b.at);
        let finished = 0;
        for (let stepIndex = 0; pending.length > 0 || engine.busy; stepIndex++) {
          if (stepIndex > 100_000) throw new Error("did not drain");
          while (pending.length > 0 && pending[0]!.at <= stepIndex) {
            const next = pending.shift()!;
            engine.add(request(next.id, next.tokens, next.output, next.prefix));
          }
          if (!engine.busy) continue;
          const step = engine.step();
          expect(step.durationMs).toBeGreaterThan(0);
          expect(step.prefillTokens + step.decodes).toBeLessThanOrEqual(shape.tokenBudget);
          expect(engine.runningCount).toBeLessThanOrEqual(shape.maxRunning);
          for (const [id, count] of step.tokens) produced.set(id, (produced.get(id) ?? 0) + count);
          finished += step.finished.length;
        }
        expect(finished).toBe(requests.length);
        requests.forEach((r, i) => expect(produced.get(`r${i}`)).toBe(r.output));
        expect(engine.cache.used).toBe(0);
      }),
      { numRuns: 300 },
    );
  });
});
