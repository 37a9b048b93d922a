import { describe, expect, it } from "vitest";
import { MemoryLoadStore } from "../../src/load/memory-store.js";
import { zeroLoad, type EngineLoad } from "../../src/load/store.js";
import { PoolDirectory } from "../../src/pools/pools.js";
import { Picker } from "../../src/scheduling/picker.js";
import { defaultWeights, leastLoaded } from "../../src/scheduling/score.js";

const engines = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000", "10.0.0.4:8000"];
const directory = new PoolDirectory([
  { name: "llama", models: ["llama"], endpoints: engines },
  { name: "empty", models: ["ghost"], endpoints: [] },
]);
const settings = { weights: defaultWeights, maxRequestsPerEngine: 0, fallbacks: 0 };

describe("Picker", () => {
  it("spreads 200 equal concurrent picks over 4 idle engines 50/50/50/50", async () => {
    const store = new MemoryLoadStore();
    const picker = new Picker(store, () => directory, settings);
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => picker.pick({ id: `r${i}`, model: "llama", promptTokens: 100 })),
    );
    const counts = new Map<string, number>();
    for (const result of results) {
      expect(result.kind).toBe("picked");
      if (result.kind === "picked") counts.set(result.reservation.engine, (counts.get(result.reservation.engine) ?? 0) + 1);
    }
    expect([...counts.values()].sort()).toEqual([50, 50, 50, 50]);
    const loads = store.loads(engines);
    for (const engine of engines) expect(loads.get(engine)).toMatchObject({ requests: 50, prefillTokens: 5000 });
  });

  it("refuses a model no pool serves, and a pool without engines", async () => {
    const picker = new Picker(new MemoryLoadStore(), () => directory, settings);
    expect(await picker.pick({ id: "a", model: "nope", promptTokens: 1 })).toEqual({ kind: "no_pool", model: "nope" });
    expect(await picker.pick({ id: "b", model: "ghost", promptTokens: 1 })).toEqual({ kind: "no_engine", pool: "empty" });
  });

  it("sends requests without a model to the catch-all pool", async () => {
    const withCatchAll = new PoolDirectory([
      { name: "llama", models: ["llama"], endpoints: ["10.0.0.1:1"] },
      { name: "rest", models: ["*"], endpoints: ["10.0.0.9:1"] },
    ]);
    const picker = new Picker(new MemoryLoadStore(), () => withCatchAll, settings);
    const result = await picker.pick({ id: "a", model: undefined, promptTokens: 0 });
    expect(result.kind === "picked" && result.reservation.engine).toBe("10.0.0.9:1");
    const other = await picker.pick({ id: "b", model: "mistral", promptTokens: 0 });
    expect(other.kind === "picked" && other.reservation.pool).toBe("rest");
  });

  it("picks only within the subset hint; an empty hint or one naming no pool engine leaves nothing", async () => {
    const store = new MemoryLoadStore();
    const picker = new Picker(store, () => directory, settings);
    for (let i = 0; i < 6; i++) {
      const result = await picker.pick({ id: `s${i}`, model: "llama", promptTokens: 1, subset: [engines[2]!, "10.9.9.9:1"] });
      expect(result.kind === "picked" && result.reservation.engine).toBe(engines[2]);
    }
    expect(await picker.pick({ id: "e", model: "llama", promptTokens: 1, subset: [] })).toEqual({ kind: "outside_subset", pool: "llama" });
    expect(await picker.pick({ id: "f", model: "llama", promptTokens: 1, subset: ["10.9.9.9:1"] })).toEqual({ kind: "outside_subset", pool: "llama" });
    expect(store.size()).toBe(6);
  });

  it("names the next-best engines as fallbacks, least loaded first, never the pick itself", async () => {
    const store = new MemoryLoadStore();
    store.reserve({ id: "busy0", pool: "llama", engine: engines[0]!, promptTokens: 500 });
    store.reserve({ id: "busy1", pool: "llama", engine: engines[1]!, promptTokens: 100 });
    store.reserve({ id: "busy3", pool: "llama", engine: engines[3]!, promptTokens: 300 });
    const picker = new Picker(store, () => directory, { ...settings, fallbacks: 2 });
    const result = await picker.pick({ id: "a", model: "llama", promptTokens: 1 });
    expect(result).toMatchObject({ kind: "picked", reservation: { engine: engines[2] }, fallbacks: [engines[1], engines[3]] });
  });

  it("sheds when every candidate is at maxRequestsPerEngine, reserving nothing", async () => {
    const store = new MemoryLoadStore();
    const picker = new Picker(store, () => directory, { ...settings, maxRequestsPerEngine: 2 });
    for (let i = 0; i < 8; i++) expect((await picker.pick({ id: `r${i}`, model: "llama", promptTokens: 1 })).kind).toBe("picked");
    expect(await picker.pick({ id: "x", model: "llama", promptTokens: 1 })).toEqual({ kind: "saturated", pool: "llama", limit: 2 });
    expect(store.size()).toBe(8);
    store.release("r0", "ok");
    expect((await picker.pick({ id: "y", model: "llama", promptTokens: 1 })).kind).toBe("picked");
  });
});

describe("leastLoaded", () => {
  const load = (partial: Partial<EngineLoad>): EngineLoad => ({ ...zeroLoad(), ...partial });

  it("prefers the engine with fewer prompt tokens in prefill when request counts are equal", () => {
    const choose = leastLoaded(defaultWeights, () => 0);
    expect(choose([load({ requests: 2, prefillTokens: 9000 }), load({ requests: 2, prefillTokens: 100 })])).toBe(1);
  });

  it("weighs dimensions as configured", () => {
    const onlyTokensHeld = leastLoaded({ requests: 0, prefillRequests: 0, prefillTokens: 0, tokensHeld: 1 }, () => 0);
    expect(onlyTokensHeld([load({ requests: 1, tokensHeld: 10 }), load({ requests: 9, tokensHeld: 20 })])).toBe(0);
    const onlyRequests = leastLoaded({ requests: 1, prefillRequests: 0, prefillTokens: 0, tokensHeld: 0 }, () => 0);
    expect(onlyRequests([load({ requests: 5, tokensHeld: 10 }), load({ requests: 1, tokensHeld: 20 })])).toBe(1);
  });

  it("chooses at random among equal scores", () => {
    const loads = [load({ requests: 3 }), load({}), load({}), load({})];
    expect(leastLoaded(defaultWeights, () => 0)(loads)).toBe(1);
    expect(leastLoaded(defaultWeights, () => 0.99)(loads)).toBe(3);
  });
});
