import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { pino } from "pino";
import { describe, expect, it, vi } from "vitest";
import { MemoryLoadStore } from "../../src/load/memory-store.js";
import type { PickRequest as StorePickRequest } from "../../src/load/store.js";
import { PoolDirectory } from "../../src/pools/pools.js";
import { MAX_EXPLAINED_CANDIDATES } from "../../src/scheduling/explanation.js";
import { PickHistory } from "../../src/scheduling/pick-history.js";
import { Picker, type PickerSettings } from "../../src/scheduling/picker.js";
import { PrefixIndex } from "../../src/scheduling/prefix-index.js";
import { PickQueue } from "../../src/scheduling/queue.js";
import { schedulingDefaults } from "../support/scheduling.js";

const engines = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000", "10.0.0.4:8000"];
const directory = new PoolDirectory([{ name: "llama", models: ["llama"], endpoints: engines }]);
const silent = pino({ level: "silent" });
const allScorers: PickerSettings = { ...schedulingDefaults, scorers: { load: 1, slowStart: 1, prefix: 0.9, ttft: 1, stepPhase: 0 } };

/** engines[0] ejected, engines[1] cold, engines[2] half warm; engines[3] holds the prompt's first two blocks. */
const availability = {
  eligible: (engine: string) => engine !== engines[0],
  coldness: (engine: string) => (engine === engines[1] ? 1 : engine === engines[2] ? 0.5 : 0),
};
const prompt = [11, 12, 13, 14];

/** The store, keeping each pick request it is given. */
function watched(store: MemoryLoadStore): { store: MemoryLoadStore; seen: StorePickRequest[] } {
  const seen: StorePickRequest[] = [];
  const pickAndReserve = store.pickAndReserve.bind(store);
  store.pickAndReserve = (request) => {
    seen.push({ ...request, bias: [...request.bias], loadWeights: { ...request.loadWeights }, unitWeights: request.unitWeights && { ...request.unitWeights } });
    return pickAndReserve(request);
  };
  return { store, seen };
}

function rig(settings: PickerSettings, capacity = 10) {
  const { store, seen } = watched(new MemoryLoadStore());
  const prefixes = new PrefixIndex();
  prefixes.record(engines[3]!, prompt.slice(0, 2));
  const history = new PickHistory(capacity, silent);
  const picker = new Picker(store, () => directory, settings, { availability, prefixes, history, random: () => 0 });
  return { store, seen, history, picker };
}

describe("an explained pick", () => {
  it("holds each candidate's weighted cost per scorer, their sum as the bias the store got, and the store's choice", async () => {
    const { seen, history, picker } = rig(allScorers);
    const result = await picker.pick({ id: "a", requestId: "req-a", model: "llama", promptTokens: 10, prefix: prompt });
    expect(result.kind).toBe("picked");
    const [explained] = history.recent();
    expect(explained).toMatchObject({
      id: "a",
      requestId: "req-a",
      model: "llama",
      pool: "llama",
      engines: 4,
      removed: { subset: 0, health: 1, saturation: 0 },
      candidates: 3,
      outcome: "picked",
      engine: result.kind === "picked" ? result.reservation.engine : "",
      fallbacks: [],
    });
    // slowStart: weight 1 × coldness; prefix: 0.9 × the share of the prompt's blocks the engine lacks; ttft: the fresh
    // model's 0.02 ms per prompt token left to prefill, counted twice, in seconds; summed in the chain's order.
    const ttft = (tokens: number) => (1 / 1000) * 0.02 * 2 * tokens;
    expect(explained?.scored).toEqual([
      { engine: engines[1], scores: { slowStart: 1, prefix: 0.9, ttft: ttft(10) }, bias: 1 + 0.9 + ttft(10) },
      { engine: engines[2], scores: { slowStart: 0.5, prefix: 0.9, ttft: ttft(10) }, bias: 0.5 + 0.9 + ttft(10) },
      { engine: engines[3], scores: { slowStart: 0, prefix: 0.9 * (1 - 2 / 4), ttft: ttft(5) }, bias: 0 + 0.9 * (1 - 2 / 4) + ttft(5) },
    ]);
    expect(explained?.engine).toBe(engines[3]);
    const [sent] = seen;
    expect(explained?.scored.map((c) => c.bias)).toEqual(sent?.bias);
    expect(explained?.loadWeights).toEqual(sent?.loadWeights);
    expect(explained?.loadWeights.requests).toBeGreaterThan(0);
    expect(explained?.unitWeights).toEqual(sent?.unitWeights);
    expect(explained?.unitWeights.prefillTokens).toBeGreaterThan(0);
  });

  it("leaves the plan the store gets exactly as it is without explaining", async () => {
    const explaining = rig(allScorers, 10);
    const not = rig(allScorers, 0);
    for (const { picker } of [explaining, not]) await picker.pick({ id: "a", model: "llama", promptTokens: 10, prefix: prompt });
    expect(explaining.seen).toEqual(not.seen);
    expect(not.history.recent()).toEqual([]);
  });

  it("is not built when nothing would keep or log it", async () => {
    const { history, picker } = rig(allScorers, 0);
    const record = vi.spyOn(history, "record");
    await picker.pick({ id: "a", model: "llama", promptTokens: 10 });
    expect(record).not.toHaveBeenCalled();
  });

  it("records every outcome: saturated, duplicate, outside the subset, no engine", async () => {
    const { store, history, picker } = rig({ ...allScorers, maxRequestsPerEngine: 1 });
    for (const id of ["a", "b", "c"]) await picker.pick({ id, model: "llama", promptTokens: 1 });
    expect((await picker.pick({ id: "d", model: "llama", promptTokens: 1 })).kind).toBe("saturated");
    expect((await picker.pick({ id: "a", model: "llama", promptTokens: 1 })).kind).toBe("duplicate");
    expect((await picker.pick({ id: "e", model: "llama", promptTokens: 1, subset: ["10.9.9.9:1"] })).kind).toBe("outside_subset");
    expect((await picker.pickAmong("llama", [], { id: "f", model: undefined, promptTokens: 1 })).kind).toBe("no_engine");
    const [noEngine, outside, duplicate, saturated] = history.recent();
    expect(saturated).toMatchObject({ id: "d", outcome: "saturated", maxRequests: 1, candidates: 3, engine: undefined });
    expect(saturated?.scored).toHaveLength(3);
    expect(duplicate).toMatchObject({ id: "a", outcome: "duplicate", engine: undefined });
    // The subset filter refused: the later filters and the scorers never ran.
    expect(outside).toMatchObject({ id: "e", outcome: "outside_subset", removed: { subset: 4 }, candidates: 0, scored: [] });
    expect(outside?.removed).not.toHaveProperty("health");
    expect(noEngine).toMatchObject({ id: "f", outcome: "no_engine", engines: 0, candidates: 0, scored: [] });
    expect(store.size()).toBe(3);
  });

  it("keeps at most MAX_EXPLAINED_CANDIDATES candidates, the chosen and fallbacks among them, and cuts a client's long texts", async () => {
    const many = Array.from({ length: 1000 }, (_, i) => `10.1.${i >> 8}.${i & 255}:8000`);
    const store = new MemoryLoadStore();
    // Load every engine but the last three, so the store's choice lies past the cap in pool order.
    many.slice(0, -3).forEach((engine, i) => store.reserve({ id: `busy${i}`, pool: "big", engine, promptTokens: 1 }));
    const history = new PickHistory(10, silent);
    const big = new PoolDirectory([{ name: "big", models: ["*"], endpoints: many }]);
    // Every engine weighed, not a sample (see below).
    const picker = new Picker(store, () => big, { ...schedulingDefaults, fallbacks: 2, maxCandidates: 0 }, { history, random: () => 0 });
    const model = "m".repeat(10_000);
    const result = await picker.pick({ id: "x", requestId: "r".repeat(5_000), model, promptTokens: 1 });
    const [explained] = history.recent();
    expect(explained?.candidates).toBe(1000);
    expect(explained?.weighed).toEqual([1000]);
    expect(explained?.scored).toHaveLength(MAX_EXPLAINED_CANDIDATES);
    const chosen = result.kind === "picked" ? [result.reservation.engine, ...result.fallbacks] : [];
    expect(chosen).toEqual(many.slice(-3));
    expect([explained?.engine, ...(explained?.fallbacks ?? [])]).toEqual(chosen);
    expect(explained?.scored.slice(-3).map((c) => c.engine)).toEqual(chosen);
    expect(explained?.scored.slice(0, -3).map((c) => c.engine)).toEqual(many.slice(0, MAX_EXPLAINED_CANDIDATES - 3));
    expect(explained?.model?.length).toBeLessThanOrEqual(257);
    expect(explained?.requestId?.length).toBeLessThanOrEqual(257);
  });

  it("in a pool sampled to maxCandidates, shows each sample the store weighed and the last one's candidates with their own costs", async () => {
    const many = Array.from({ length: 300 }, (_, i) => `10.2.${i >> 8}.${i & 255}:8000`);
    // Each engine a coldness of its own, so a cost shown against the wrong engine would show.
    const coldness = new Map(many.map((engine, i) => [engine, ((i * 37) % 300) / 1000]));
    const warming = { eligible: () => true, coldness: (engine: string) => coldness.get(engine) ?? 0 };
    const pool = new PoolDirectory([{ name: "big", models: ["big"], endpoints: many }]);
    const store = new MemoryLoadStore();
    const history = new PickHistory(10, silent);
    const settings = { ...schedulingDefaults, maxCandidates: 128, maxRequestsPerEngine: 1 };
    let draw = 0;
    const picker = new Picker(store, () => pool, settings, { availability: warming, history, random: () => ((draw = (draw * 7 + 3) % 11) / 11) });
    const result = await picker.pick({ id: "a", model: "big", promptTokens: 1 });
    expect(result.kind).toBe("picked");
    const [picked] = history.recent();
    expect(picked).toMatchObject({ candidates: 300, weighed: [128], engine: result.kind === "picked" ? result.reservation.engine : "" });
    expect(picked?.scored).toHaveLength(MAX_EXPLAINED_CANDIDATES);
    for (const candidate of picked?.scored ?? []) expect(candidate).toEqual({ engine: candidate.engine, scores: { slowStart: coldness.get(candidate.engine), prefix: 0, stepPhase: 0 }, bias: coldness.get(candidate.engine) });
    // Every engine full: the store is asked again among those each sample left out, then refuses.
    for (const [i, engine] of many.entries()) store.reserve({ id: `busy${i}`, pool: "big", engine, promptTokens: 1 });
    expect((await picker.pick({ id: "b", model: "big", promptTokens: 1 })).kind).toBe("saturated");
    expect(history.recent()[0]).toMatchObject({ outcome: "saturated", candidates: 300, weighed: [128, 128, 44] });
  });

  it("cuts every text a client may send, and keeps none of it alive beyond the cut", async () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const history = new PickHistory(100, silent);
    const store = new MemoryLoadStore();
    const picker = new Picker(store, () => directory, schedulingDefaults, { history });
    // One pool: the store keeps each pool's name for its idle engines.
    const pool = "pool".padEnd(1_000_000, "p");
    gc();
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < 100; i++) {
      // 1 MB each, new for each pick, as a parsed request body's would be.
      const long = (what: string): string => `${what}${i}`.padEnd(1_000_000, what);
      await picker.pickAmong(pool, [engines[0]!], { id: long("id"), requestId: long("request"), model: long("model"), promptTokens: 1 });
      store.release(long("id"), "ok");
    }
    gc();
    // Kept whole, the 100 picks' three texts would hold 300 MB.
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(40_000_000);
    const [newest] = history.recent();
    for (const text of [newest?.id, newest?.requestId, newest?.model, newest?.pool]) expect(text?.length).toBe(257);
    expect(newest?.model?.startsWith("model99model")).toBe(true);
  });

  it("explains a request the queue holds once when it finds the pool full and once when it is picked, not at each retry", async () => {
    const store = new MemoryLoadStore();
    const history = new PickHistory(10, silent);
    const one = new PoolDirectory([{ name: "llama", models: ["llama"], endpoints: [engines[0]!] }]);
    const picker = new Picker(store, () => one, { ...schedulingDefaults, maxRequestsPerEngine: 1 }, { history });
    const settings = { maxRequests: 5, maxBytes: 1000, maxWaitMs: 10_000, agingMs: 500, retryMs: 60_000, priorities: {} };
    const queue = new PickQueue(() => picker, settings, { held: () => undefined, waited: () => undefined, failed: () => undefined });
    try {
      const request = (id: string) => ({ id, model: "llama", promptTokens: 1, priorityHint: undefined, bytes: 1 });
      expect((await queue.pick(request("busy"))).kind).toBe("picked");
      const held = queue.pick(request("held"));
      for (let i = 0; i < 5; i++) {
        queue.wake();
        await new Promise((resolve) => setImmediate(resolve));
      }
      store.release("busy", "ok");
      queue.wake();
      expect((await held).kind).toBe("picked");
      expect(history.recent().map((pick) => [pick.id, pick.outcome])).toEqual([
        ["held", "picked"],
        ["held", "saturated"],
        ["busy", "picked"],
      ]);
    } finally {
      queue.close();
    }
  });
});
