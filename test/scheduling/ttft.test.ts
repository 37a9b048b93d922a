import { describe, expect, it } from "vitest";
import { MemoryLoadStore } from "../../src/load/memory-store.js";
import { zeroLoad, type EngineLoad } from "../../src/load/store.js";
import { PoolDirectory } from "../../src/pools/pools.js";
import { Picker } from "../../src/scheduling/picker.js";
import { PrefixIndex } from "../../src/scheduling/prefix-index.js";
import { TtftModel, type TtftFeatures } from "../../src/scheduling/ttft-model.js";
import { TtftPredictor } from "../../src/scheduling/ttft-predictor.js";
import { mulberry32 } from "../support/random.js";
import { schedulingDefaults } from "../support/scheduling.js";

/** A pool whose engines answer in 8 ms plus 0.04 ms per prompt token queued or own, plus 0.3 ms per request running. */
const truth = ({ load, uncachedTokens }: TtftFeatures): number => 8 + 0.04 * (load.prefillTokens + uncachedTokens) + 0.3 * load.requests;

function randomFeatures(random: () => number): TtftFeatures {
  const requests = Math.floor(random() * 40);
  const prefillRequests = Math.floor(random() * Math.min(requests, 8));
  const prefillTokens = prefillRequests * Math.floor(random() * 4000);
  const load: EngineLoad = { requests, prefillRequests, prefillTokens, tokensHeld: prefillTokens + requests * Math.floor(random() * 2000) };
  return { load, uncachedTokens: Math.floor(random() * 6000) };
}

describe("TtftModel", () => {
  it("learns a pool's linear TTFT from noisy first tokens: within 5 % (+ 3 ms) of the truth on fresh loads", () => {
    const random = mulberry32(7);
    const model = new TtftModel();
    for (let i = 0; i < 3000; i++) {
      const features = randomFeatures(random);
      model.learn(features, truth(features) * (0.9 + 0.2 * random()));
    }
    let worst = 0;
    for (let i = 0; i < 500; i++) {
      const features = randomFeatures(random);
      // The noise is ±10 % of TTFTs averaging ~250 ms: the constant is known to a few ms.
      worst = Math.max(worst, Math.abs(model.predict(features) - truth(features)) - 0.05 * truth(features));
    }
    expect(worst).toBeLessThan(3);
    expect(model.costs().perUncachedToken).toBeCloseTo(0.04, 2);
    expect(model.costs().perUnit.prefillTokens).toBeCloseTo(0.04, 2);
    expect(model.observations).toBe(3000);
  });

  it("never weighs more load as faster: a pool where busier engines answered sooner leaves those costs at 0, not below", () => {
    const random = mulberry32(3);
    const model = new TtftModel();
    for (let i = 0; i < 2000; i++) {
      const features = randomFeatures(random);
      model.learn(features, Math.max(0, 500 - 0.05 * features.load.prefillTokens - 5 * features.load.requests - 0.01 * features.load.tokensHeld));
    }
    const { perUncachedToken, perUnit } = model.costs();
    for (const cost of [perUncachedToken, perUnit.requests, perUnit.prefillRequests, perUnit.prefillTokens, perUnit.tokensHeld]) expect(cost).toBeGreaterThanOrEqual(0);
    expect(perUnit.prefillTokens + perUnit.requests + perUnit.tokensHeld).toBe(0);
  });

  it("is not rewritten by one absurd first token, and ignores values that are not times", () => {
    const random = mulberry32(11);
    const model = new TtftModel();
    for (let i = 0; i < 1000; i++) {
      const features = randomFeatures(random);
      model.learn(features, truth(features));
    }
    const probe = randomFeatures(random);
    const before = model.predict(probe);
    model.learn(probe, 3_600_000);
    expect(Math.abs(model.predict(probe) - before) / before).toBeLessThan(0.1);
    const settled = model.predict(probe);
    for (const bad of [NaN, Infinity, -5]) model.learn(probe, bad);
    model.learn({ load: { ...zeroLoad(), prefillTokens: NaN }, uncachedTokens: 1 }, 10);
    expect(model.predict(probe)).toBe(settled);
    expect(model.observations).toBe(1001);
  });
});

describe("TtftPredictor", () => {
  const engine = "10.0.0.1:8000";

  it("counts the prompt past the leading blocks the engine is believed to hold", () => {
    const prefixes = new PrefixIndex();
    const predictor = new TtftPredictor(prefixes);
    prefixes.record(engine, [1, 2, 3]);
    expect(predictor.uncachedTokens(engine, { id: "a", model: undefined, promptTokens: 100, prefix: [1, 2, 9, 9] })).toBe(50);
    expect(predictor.uncachedTokens(engine, { id: "b", model: undefined, promptTokens: 100, prefix: [1, 2, 3, 4], prefixBlockTokens: 16 })).toBe(52);
    expect(predictor.uncachedTokens(engine, { id: "c", model: undefined, promptTokens: 10, prefix: [1, 2, 3], prefixBlockTokens: 16 })).toBe(0);
    expect(predictor.uncachedTokens("10.0.0.2:8000", { id: "d", model: undefined, promptTokens: 100, prefix: [1, 2, 3] })).toBe(100);
    expect(predictor.uncachedTokens(engine, { id: "e", model: undefined, promptTokens: 100 })).toBe(100);
  });

  it("learns from each forecast once, and tells the observer what it predicted against what came", () => {
    const told: Array<[number, number]> = [];
    const predictor = new TtftPredictor(new PrefixIndex(), (predicted, observed) => told.push([predicted, observed]));
    const forecast = predictor.forecast("p", engine, zeroLoad(), { id: "a", model: undefined, promptTokens: 1000 });
    expect(forecast.predictedMs).toBeCloseTo(predictor.model("p").predict({ load: zeroLoad(), uncachedTokens: 1000 }), 9);
    forecast.seen(42);
    forecast.seen(43);
    expect(told).toEqual([[forecast.predictedMs, 42]]);
    expect(predictor.model("p").observations).toBe(1);
    expect(predictor.model("q").observations).toBe(0);
  });

  it("keeps a bounded number of pools' models, dropping the least recently used", () => {
    const predictor = new TtftPredictor(new PrefixIndex());
    const kept = predictor.model("kept");
    const dropped = predictor.model("dropped");
    for (let i = 0; i < 1100; i++) {
      predictor.model(`cluster-${i}`);
      if (i % 100 === 0) predictor.model("kept");
    }
    expect(predictor.model("kept")).toBe(kept);
    expect(predictor.model("dropped")).not.toBe(dropped);
  });
});

describe("the ttft scorer in a pick", () => {
  const engines = ["10.0.0.1:8000", "10.0.0.2:8000"];
  const directory = new PoolDirectory([{ name: "p", models: ["*"], endpoints: engines }]);
  const onlyTtft = { ...schedulingDefaults, scorers: { load: 0, slowStart: 0, prefix: 0, ttft: 1, stepPhase: 0 } };

  /** A picker whose pool model has learnt `truth` (0.04 ms a prompt token), with engine 1 holding blocks 1–8 of a 4,096-token prompt. */
  function trained() {
    const store = new MemoryLoadStore();
    const prefixes = new PrefixIndex();
    const ttft = new TtftPredictor(prefixes);
    const random = mulberry32(5);
    for (let i = 0; i < 2000; i++) {
      const features = randomFeatures(random);
      ttft.model("p").learn(features, truth(features));
    }
    prefixes.record(engines[0]!, [1, 2, 3, 4, 5, 6, 7, 8]);
    const picker = new Picker(store, () => directory, onlyTtft, { prefixes, ttft, random: () => 0 });
    const request = (id: string) => ({ id, model: undefined, promptTokens: 4096, prefix: [1, 2, 3, 4, 5, 6, 7, 8], prefixBlockTokens: 512 });
    return { store, picker, request };
  }

  it("follows the cached prefix while the queue there costs less than the prefill it saves, and leaves it once it costs more", async () => {
    const { store, picker, request } = trained();
    // Engine 1 has 2,000 tokens queued (80 ms), less than what its cache saves: 4,096 tokens of prefill (164 ms), counted
    // twice, as this request's and as the wait it would add for those queued behind it.
    store.reserve({ id: "q1", pool: "p", engine: engines[0]!, promptTokens: 2000 });
    const first = await picker.pick(request("a"));
    expect(first.kind === "picked" && first.reservation.engine).toBe(engines[0]);
    store.release("a", "ok");
    // With 9,000 tokens queued (360 ms) the idle engine is the better place, prefill and all.
    store.reserve({ id: "q2", pool: "p", engine: engines[0]!, promptTokens: 7000 });
    const second = await picker.pick(request("b"));
    expect(second.kind === "picked" && second.reservation.engine).toBe(engines[1]);
  });

  it("spreads a burst of one hot prefix once its engine's queue outweighs the cache", async () => {
    const { picker, request } = trained();
    const counts = new Map<string, number>();
    for (let i = 0; i < 8; i++) {
      const result = await picker.pick(request(`r${i}`));
      if (result.kind === "picked") counts.set(result.reservation.engine, (counts.get(result.reservation.engine) ?? 0) + 1);
    }
    // Engine 2 holds the prefix from its first pick on (the picker records it), so the two then alternate: 4 and 4.
    expect(engines.map((engine) => counts.get(engine) ?? 0)).toEqual([4, 4]);
  });

  it("forecasts the chosen engine's TTFT from the load the store weighed", async () => {
    const { store, picker, request } = trained();
    store.reserve({ id: "q", pool: "p", engine: engines[1]!, promptTokens: 500 });
    const result = await picker.pick(request("a"));
    if (result.kind !== "picked") throw new Error(result.kind);
    expect(result.reservation.engine).toBe(engines[0]);
    // Engine 1 was idle and holds the whole prompt: about the constant alone.
    expect(result.forecast.predictedMs).toBeCloseTo(8, 0);
  });
});
