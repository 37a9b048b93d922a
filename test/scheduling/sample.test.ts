import { describe, expect, it } from "vitest";
import { MemoryLoadStore } from "../../src/load/memory-store.js";
import { zeroLoad } from "../../src/load/store.js";
import { parseConfig } from "../../src/config/load.js";
import { PoolDirectory } from "../../src/pools/pools.js";
import { Picker } from "../../src/scheduling/picker.js";
import type { PickPlan } from "../../src/scheduling/plan.js";
import { sampleCandidates } from "../../src/scheduling/sample.js";
import { mulberry32 } from "../support/random.js";
import { schedulingDefaults } from "../support/scheduling.js";

const addresses = (count: number): string[] => Array.from({ length: count }, (_, i) => `10.0.${i >> 8}.${i & 255}:8000`);

function planOf(candidates: string[], bias: number[]): PickPlan {
  return { pool: "p", candidates, bias, loadWeights: { requests: 1, prefillRequests: 0, prefillTokens: 0, tokensHeld: 0 }, unitWeights: zeroLoad(), maxRequests: 0, maxPrefillRequests: 0 };
}

/** Open requests per engine after `picks` picks among `count` engines, none released. */
async function spreadAfter(count: number, picks: number, maxCandidates: number): Promise<number> {
  const store = new MemoryLoadStore();
  const directory = new PoolDirectory([{ name: "big", models: ["m"], endpoints: addresses(count) }]);
  const picker = new Picker(store, () => directory, { ...schedulingDefaults, maxCandidates }, { random: mulberry32(7) });
  for (let i = 0; i < picks; i += 1) expect((await picker.pick({ id: `r${i}`, model: "m", promptTokens: 10 })).kind).toBe("picked");
  const requests = [...store.poolLoads("big").values()].map((load) => load.requests);
  expect(requests).toHaveLength(count);
  return Math.max(...requests) - Math.min(...requests);
}

describe("sampleCandidates", () => {
  it("keeps `size` distinct candidates, the scorers' favourites among them, and returns the others", () => {
    const candidates = addresses(1000);
    const favourites = new Set([3, 250, 251, 999].map((i) => candidates[i]));
    const bias = candidates.map((engine) => (favourites.has(engine) ? 0 : 0.5));
    const plan = planOf(candidates, bias);
    const rest = sampleCandidates(plan, 128, mulberry32(1));
    expect(plan.candidates).toHaveLength(128);
    expect(new Set(plan.candidates).size).toBe(128);
    for (const engine of favourites) expect(plan.candidates).toContain(engine);
    expect(plan.bias).toEqual(plan.candidates.map((engine) => (favourites.has(engine) ? 0 : 0.5)));
    expect(new Set([...plan.candidates, ...rest.candidates])).toEqual(new Set(candidates));
    expect(rest.bias).toEqual(rest.candidates.map(() => 0.5));
  });

  it("draws equal candidates at random: over many picks every engine is weighed about as often", () => {
    const candidates = addresses(1000);
    const seen = new Map<string, number>();
    const random = mulberry32(2);
    for (let round = 0; round < 400; round += 1) {
      const plan = planOf(candidates, candidates.map(() => 0));
      sampleCandidates(plan, 100, random);
      for (const engine of plan.candidates) seen.set(engine, (seen.get(engine) ?? 0) + 1);
    }
    // 40 expected per engine; binomial(400, 0.1) stays within 15..70 for every one of 1,000 engines.
    expect(seen.size).toBe(1000);
    expect(Math.min(...seen.values())).toBeGreaterThanOrEqual(15);
    expect(Math.max(...seen.values())).toBeLessThanOrEqual(70);
  });
});

describe("Picker on a pool larger than maxCandidates", () => {
  it("spreads picks over 1,000 engines within 2 of each other (all weighed: within 1)", async () => {
    expect(await spreadAfter(1000, 3000, 0)).toBeLessThanOrEqual(1);
    expect(await spreadAfter(1000, 3000, 128)).toBeLessThanOrEqual(2);
  });

  it("refuses as saturated only once every engine of the pool is full, not when the sample is", async () => {
    const store = new MemoryLoadStore();
    const directory = new PoolDirectory([{ name: "big", models: ["m"], endpoints: addresses(300) }]);
    const picker = new Picker(store, () => directory, { ...schedulingDefaults, maxCandidates: 16, maxRequestsPerEngine: 1 }, { random: mulberry32(3) });
    for (let i = 0; i < 300; i += 1) expect((await picker.pick({ id: `r${i}`, model: "m", promptTokens: 10 })).kind).toBe("picked");
    expect((await picker.pick({ id: "one-more", model: "m", promptTokens: 10 })).kind).toBe("saturated");
    expect([...store.poolLoads("big").values()].every((load) => load.requests === 1)).toBe(true);
  });

  it("is 128 by default, and 1 is refused", () => {
    expect(schedulingDefaults.maxCandidates).toBe(128);
    const config = (max: number) => `pools: [{ name: p, models: [m], endpoints: ['127.0.0.1:1'] }]\nscheduling: { maxCandidates: ${max} }`;
    expect(() => parseConfig(config(1), "c.yaml")).toThrow(/maxCandidates.*0 \(all\) or at least 2/s);
    expect(parseConfig(config(0), "c.yaml").scheduling.maxCandidates).toBe(0);
  });
});

describe("a saturated pool sampled in small rounds", () => {
  it("finds its one engine with room, each round at the same stack depth however many it takes", () => {
    const engines = addresses(400);
    const store = new MemoryLoadStore();
    const free = engines[engines.length - 1]!;
    for (const engine of engines) if (engine !== free) store.reserve({ id: `held-${engine}`, pool: "big", engine, promptTokens: 1 });
    const depths: number[] = [];
    const limit = Error.stackTraceLimit;
    const measured = new Proxy(store, {
      get(target, name, receiver) {
        const value = Reflect.get(target, name, receiver) as unknown;
        if (name !== "pickAndReserve" || typeof value !== "function") return value;
        return (...args: unknown[]) => {
          Error.stackTraceLimit = Infinity;
          depths.push(new Error().stack!.split("\n").length);
          Error.stackTraceLimit = limit;
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    const directory = new PoolDirectory([{ name: "big", models: ["m"], endpoints: engines }]);
    const picker = new Picker(measured, () => directory, { ...schedulingDefaults, maxCandidates: 2, maxRequestsPerEngine: 1 }, { random: mulberry32(3) });
    expect(picker.pick({ id: "late", model: "m", promptTokens: 10 })).toMatchObject({ kind: "picked", reservation: { engine: free } });
    expect(depths.length).toBeGreaterThan(100);
    expect(new Set(depths).size).toBe(1);
  });

  it("finds it too when the store answers later, round after round", async () => {
    const engines = addresses(40);
    const store = new MemoryLoadStore();
    const free = engines[engines.length - 1]!;
    for (const engine of engines) if (engine !== free) store.reserve({ id: `held-${engine}`, pool: "big", engine, promptTokens: 1 });
    let rounds = 0;
    const later = new Proxy(store, {
      get(target, name, receiver) {
        const value = Reflect.get(target, name, receiver) as unknown;
        if (name !== "pickAndReserve" || typeof value !== "function") return value;
        return (...args: unknown[]) => ((rounds += 1), Promise.resolve((value as (...a: unknown[]) => unknown).apply(target, args)));
      },
    });
    const directory = new PoolDirectory([{ name: "big", models: ["m"], endpoints: engines }]);
    const picker = new Picker(later, () => directory, { ...schedulingDefaults, maxCandidates: 2, maxRequestsPerEngine: 1 }, { random: mulberry32(3) });
    const result = picker.pick({ id: "late", model: "m", promptTokens: 10 });
    expect(result).toBeInstanceOf(Promise);
    expect(await result).toMatchObject({ kind: "picked", reservation: { engine: free } });
    expect(rounds).toBeGreaterThan(1);
  });
});
