import { describe, expect, it } from "vitest";
import { MemoryLoadStore } from "../../src/load/memory-store.js";
import { PoolDirectory } from "../../src/pools/pools.js";
import { EngineSteps } from "../../src/scheduling/engine-steps.js";
import { Picker } from "../../src/scheduling/picker.js";
import { schedulingDefaults } from "../support/scheduling.js";

/** An EngineSteps on a clock the test moves. */
function stepsAt(): { steps: EngineSteps; at: (ms: number) => void } {
  let now = 0;
  return { steps: new EngineSteps(() => now), at: (ms) => void (now = ms) };
}

/** Streamed events from `engine` at each of these times. */
function streamed(clock: ReturnType<typeof stepsAt>, engine: string, times: readonly number[]): void {
  for (const time of times) {
    clock.at(time);
    clock.steps.seen(engine);
  }
}

describe("EngineSteps", () => {
  it("learns an engine's step interval from its streamed events, and says how long a request sent now would wait", () => {
    const clock = stepsAt();
    expect(clock.steps.rhythm("a")).toBeUndefined();
    streamed(clock, "a", [100]);
    // One step seen: no interval yet.
    expect(clock.steps.rhythm("a")).toBeUndefined();
    streamed(clock, "a", [110]);
    clock.at(112);
    expect(clock.steps.rhythm("a")).toEqual({ waitMs: 8, intervalMs: 10 });
    // Two intervals on: the step under way ends at 130.
    clock.at(121);
    expect(clock.steps.rhythm("a")?.waitMs).toBeCloseTo(9);
  });

  it("counts events of one step seen on several streams once, and a pause as no step", () => {
    const clock = stepsAt();
    // Each step's tokens reach several streams a little apart.
    streamed(clock, "a", [0, 10, 10.5, 11, 20, 20.4]);
    clock.at(20.4);
    expect(clock.steps.rhythm("a")?.intervalMs).toBeCloseTo(10);
    // Nothing streamed for more than four steps, then a step: still 10 ms steps, the phase from it.
    streamed(clock, "a", [70]);
    expect(clock.steps.rhythm("a")).toEqual({ waitMs: 10, intervalMs: 10 });
  });

  it("follows an engine whose steps grow longer, and forgets its phase when it falls quiet", () => {
    const clock = stepsAt();
    streamed(clock, "a", [0, 10, ...Array.from({ length: 20 }, (_, i) => 30 + 20 * i)]);
    expect(clock.steps.rhythm("a")?.intervalMs).toBeCloseTo(20, 0);
    // Nothing for more than four steps: it is idle (it would start a step at once) or gone.
    clock.at(410 + 81);
    expect(clock.steps.rhythm("a")).toBeUndefined();
  });
});

describe("the step-phase scorer", () => {
  const engines = ["10.0.0.1:8000", "10.0.0.2:8000"];
  const directory = new PoolDirectory([{ name: "llama", models: ["llama"], endpoints: engines }]);
  const settings = { ...schedulingDefaults, scorers: { ...schedulingDefaults.scorers, slowStart: 0, prefix: 0, stepPhase: 0.25 } };
  const [early, late] = engines as [string, string];

  /** Both engines stepping every 10 ms; `late` has just ended a step, `early` is about to. */
  function rhythms(): EngineSteps {
    const clock = stepsAt();
    streamed(clock, early, [0, 10, 20]);
    streamed(clock, late, [9, 19, 29]);
    clock.at(29);
    return clock.steps;
  }

  it("sends a short prompt to the engine whose step ends first, loads being even", async () => {
    const store = new MemoryLoadStore();
    const picker = new Picker(store, () => directory, settings, { steps: rhythms(), random: () => 0.99 });
    for (const [i, engine] of engines.entries()) store.reserve({ id: `running${i}`, pool: "llama", engine, promptTokens: 100 });
    for (const id of ["running0", "running1"]) store.firstToken(id);
    const result = await picker.pick({ id: "short", model: "llama", promptTokens: 50 });
    expect(result.kind === "picked" && result.reservation.engine).toBe(early);
  });

  it("never outweighs a request in prefill: the phase decides among equals, not against the load", async () => {
    const store = new MemoryLoadStore();
    const picker = new Picker(store, () => directory, settings, { steps: rhythms(), random: () => 0 });
    store.reserve({ id: "prefilling", pool: "llama", engine: early, promptTokens: 50 });
    const result = await picker.pick({ id: "short", model: "llama", promptTokens: 50 });
    expect(result.kind === "picked" && result.reservation.engine).toBe(late);
  });
});
