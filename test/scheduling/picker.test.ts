import { describe, expect, it } from "vitest";
import { MemoryLoadStore } from "../../src/load/memory-store.js";
import { rankByLoad } from "../../src/load/ranking.js";
import { type PickRequest as StorePickRequest, zeroLoad, type EngineLoad } from "../../src/load/store.js";
import { parseConfig } from "../../src/config/load.js";
import { PoolDirectory } from "../../src/pools/pools.js";
import { Picker } from "../../src/scheduling/picker.js";
import { PrefixIndex } from "../../src/scheduling/prefix-index.js";
import { TtftPredictor } from "../../src/scheduling/ttft-predictor.js";
import { mulberry32 } from "../support/random.js";
import { schedulingDefaults } from "../support/scheduling.js";

const engines = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000", "10.0.0.4:8000"];
const directory = new PoolDirectory([
  { name: "llama", models: ["llama"], endpoints: engines },
  { name: "empty", models: ["ghost"], endpoints: [] },
]);
const settings = schedulingDefaults;

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
    expect(await picker.pick({ id: "x", model: "llama", promptTokens: 1 })).toEqual({ kind: "saturated", pool: "llama", limit: 2, prefillLimit: 0 });
    expect(store.size()).toBe(8);
    store.release("r0", "ok");
    expect((await picker.pick({ id: "y", model: "llama", promptTokens: 1 })).kind).toBe("picked");
  });

  it("sheds when every candidate is at maxPrefillRequestsPerEngine, and takes again as soon as a first token comes", async () => {
    const store = new MemoryLoadStore();
    const picker = new Picker(store, () => directory, { ...settings, maxPrefillRequestsPerEngine: 1 });
    const placed: string[] = [];
    for (let i = 0; i < 4; i++) {
      const result = await picker.pick({ id: `r${i}`, model: "llama", promptTokens: 1 });
      placed.push(result.kind === "picked" ? result.reservation.engine : result.kind);
    }
    expect(new Set(placed).size).toBe(4);
    expect(await picker.pick({ id: "x", model: "llama", promptTokens: 1 })).toEqual({ kind: "saturated", pool: "llama", limit: 0, prefillLimit: 1 });
    // r2 is out of prefill but still open: its engine takes one more in prefill.
    store.firstToken("r2");
    const next = await picker.pick({ id: "y", model: "llama", promptTokens: 1 });
    expect(next.kind === "picked" && next.reservation.engine).toBe(placed[2]);
    expect(store.size()).toBe(5);
  });
});

describe("a pick that fails after its reservation", () => {
  it("releases it, so that no engine carries a request nobody was given", () => {
    const store = new MemoryLoadStore();
    const broken = new TtftPredictor(new PrefixIndex());
    broken.forecast = () => {
      throw new Error("forecast failed");
    };
    const picker = new Picker(store, () => directory, schedulingDefaults, { ttft: broken });
    expect(() => picker.pick({ id: "r1", model: "llama", promptTokens: 100 })).toThrow("forecast failed");
    expect(store.size()).toBe(0);
    for (const load of store.poolLoads("llama").values()) expect(load).toMatchObject(zeroLoad());
  });
});

describe("rankByLoad, the choice each store makes atomically", () => {
  const load = (partial: Partial<EngineLoad>): EngineLoad => ({ ...zeroLoad(), ...partial });
  const even = { requests: 0.25, prefillRequests: 0.25, prefillTokens: 0.25, tokensHeld: 0.25 };
  const first = (loads: EngineLoad[], weights = even, tieBreak = 0, bias = loads.map(() => 0)) => rankByLoad(loads, bias, weights, undefined, tieBreak, 1)[0];

  it("prefers the engine with fewer prompt tokens in prefill when request counts are equal", () => {
    expect(first([load({ requests: 2, prefillTokens: 9000 }), load({ requests: 2, prefillTokens: 100 })])).toBe(1);
  });

  it("weighs dimensions as configured", () => {
    const onlyTokensHeld = { requests: 0, prefillRequests: 0, prefillTokens: 0, tokensHeld: 1 };
    expect(first([load({ requests: 1, tokensHeld: 10 }), load({ requests: 9, tokensHeld: 20 })], onlyTokensHeld)).toBe(0);
    const onlyRequests = { requests: 1, prefillRequests: 0, prefillTokens: 0, tokensHeld: 0 };
    expect(first([load({ requests: 5, tokensHeld: 10 }), load({ requests: 1, tokensHeld: 20 })], onlyRequests)).toBe(1);
  });

  it("chooses among equal scores by the tie-break", () => {
    const loads = [load({ requests: 3 }), load({}), load({}), load({})];
    expect(first(loads, even, 0)).toBe(1);
    expect(first(loads, even, 0.99)).toBe(3);
  });

  it("adds each candidate's bias: a cold idle engine loses to a warm busy one until it warms", () => {
    const loads = [load({ requests: 4, prefillRequests: 4, prefillTokens: 400, tokensHeld: 400 }), load({})];
    expect(first(loads, even, 0, [0, 1.5])).toBe(0);
    expect(first(loads, even, 0, [0, 0.5])).toBe(1);
  });

  it("adds each live number times its unit weight, not normalised: raw units outweigh a share", () => {
    // Normalised, 1 request against 2 costs 0.5 against 1; in units, 3,000 prompt tokens at 0.001 each cost 3.
    const loads = [load({ requests: 1, prefillTokens: 3000 }), load({ requests: 2, prefillTokens: 0 })];
    const onlyRequests = { requests: 1, prefillRequests: 0, prefillTokens: 0, tokensHeld: 0 };
    expect(first(loads, onlyRequests)).toBe(0);
    const perToken = { requests: 0, prefillRequests: 0, prefillTokens: 0.001, tokensHeld: 0 };
    expect(rankByLoad(loads, [0, 0], onlyRequests, perToken, 0, 1)[0]).toBe(1);
    expect(rankByLoad(loads, [2.5, 0], onlyRequests, perToken, 0, 1)[0]).toBe(1);
    expect(rankByLoad(loads, [0, 3], onlyRequests, perToken, 0, 1)[0]).toBe(0);
  });

  it("ranks the rest after the first, each among those left, and never more than asked", () => {
    const loads = [load({ requests: 3 }), load({ requests: 1 }), load({ requests: 2 }), load({})];
    expect(rankByLoad(loads, [0, 0, 0, 0], even, undefined, 0, 3)).toEqual([3, 1, 2]);
    expect(rankByLoad(loads, [0, 0, 0, 0], even, undefined, 0, 9)).toEqual([3, 1, 2, 0]);
  });
});

describe("the scheduling chain from config", () => {
  const availability = { eligible: (engine: string) => engine !== engines[0], coldness: (engine: string) => (engine === engines[1] ? 1 : 0) };

  it("runs the named filters in order and leaves out a scorer weighted 0", async () => {
    const store = new MemoryLoadStore();
    const planned: PickPlanSeen[] = [];
    const watching = watch(store, planned);
    const picker = new Picker(watching, () => directory, { ...settings, scorers: { load: 1, slowStart: 0, prefix: 0, ttft: 0, stepPhase: 0 } }, { availability, random: () => 0 });
    await picker.pick({ id: "a", model: "llama", promptTokens: 1 });
    expect(planned[0]).toMatchObject({ candidates: engines.slice(1), bias: [0, 0, 0], maxRequests: 0 });
    const withoutHealth = new Picker(watching, () => directory, { ...settings, filters: ["subset", "saturation"] }, { availability, random: () => 0 });
    await withoutHealth.pick({ id: "b", model: "llama", promptTokens: 1 });
    expect(planned[1]).toMatchObject({ candidates: engines, bias: [0, 1, 0, 0] });
  });

  it("rejects a filter named twice or unknown, and a negative weight, naming the key", () => {
    const config = (scheduling: string) => () => parseConfig(`pools: [{ name: p, models: [m], endpoints: ['127.0.0.1:1'] }]\nscheduling: ${scheduling}`, "c.yaml");
    expect(config("{ filters: [health, health] }")).toThrow(/scheduling\.filters: names a filter twice/);
    expect(config("{ filters: [prefix] }")).toThrow(/scheduling\.filters\[0\]: Invalid option/);
    expect(config("{ scorers: { load: -1 } }")).toThrow(/scheduling\.scorers\.load/);
  });
});

type PickPlanSeen = Pick<StorePickRequest, "candidates" | "bias" | "maxRequests" | "loadWeights">;

/** The store, noting each plan it is given. */
function watch(store: MemoryLoadStore, seen: PickPlanSeen[]): MemoryLoadStore {
  const pickAndReserve = store.pickAndReserve.bind(store);
  store.pickAndReserve = (request) => {
    seen.push({ candidates: [...request.candidates], bias: [...request.bias], maxRequests: request.maxRequests, loadWeights: request.loadWeights });
    return pickAndReserve(request);
  };
  return store;
}

describe("Picker: prefix affinity", () => {
  const withPrefix = { ...settings, scorers: { ...settings.scorers, prefix: 0.9 } };
  const engineOf = (result: Awaited<ReturnType<Picker["pick"]>>): string => (result.kind === "picked" ? result.reservation.engine : result.kind);

  it("sends a prompt back to the engine that served its leading blocks, while loads are even", async () => {
    const store = new MemoryLoadStore();
    // Ties broken at random: only the recorded blocks bring each prompt back to the same engine.
    const picker = new Picker(store, () => directory, withPrefix, { random: mulberry32(9) });
    expect(picker.usesPrefix).toBe(true);
    const first = engineOf(await picker.pick({ id: "a", model: "llama", promptTokens: 100, prefix: [1, 2, 3, 4] }));
    store.release("a", "ok");
    for (let i = 0; i < 5; i++) {
      const again = await picker.pick({ id: `b${i}`, model: "llama", promptTokens: 100, prefix: [1, 2, 3, 9 + i] });
      expect(engineOf(again)).toBe(first);
      store.release(`b${i}`, "ok");
    }
    // The default chain reads the prompt's blocks; without the prefix and TTFT scorers nothing does.
    expect(new Picker(new MemoryLoadStore(), () => directory, settings).usesPrefix).toBe(true);
    const plain = new Picker(new MemoryLoadStore(), () => directory, { ...settings, scorers: { ...settings.scorers, prefix: 0, ttft: 0 } });
    expect(plain.usesPrefix).toBe(false);
  });

  it("lets the load scorer spread a hot prefix rather than pile it onto one engine", async () => {
    const store = new MemoryLoadStore();
    const picker = new Picker(store, () => directory, withPrefix, { random: () => 0 });
    const first = engineOf(await picker.pick({ id: "a", model: "llama", promptTokens: 100, prefix: [1, 2] }));
    // Several of the same prefix open at once: each adds load where the prefix lives.
    const placed = [first];
    for (let i = 0; i < 7; i++) placed.push(engineOf(await picker.pick({ id: `h${i}`, model: "llama", promptTokens: 100, prefix: [1, 2] })));
    const perEngine = engines.map((engine) => placed.filter((placedOn) => placedOn === engine).length);
    expect(Math.max(...perEngine)).toBeLessThanOrEqual(4);
  });
});
