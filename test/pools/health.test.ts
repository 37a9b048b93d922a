import { describe, expect, it } from "vitest";
import { MemoryLoadStore } from "../../src/load/memory-store.js";
import { EngineHealth, type HealthSettings } from "../../src/pools/health.js";
import { PoolDirectory } from "../../src/pools/pools.js";
import { Picker } from "../../src/scheduling/picker.js";
import { schedulingDefaults } from "../support/scheduling.js";

const settings: HealthSettings = { ejectAfterErrors: 3, ejectSeconds: 10, maxEjectSeconds: 25, slowStartSeconds: 20 };
const A = "10.0.0.1:1";
const B = "10.0.0.2:1";

function clock() {
  let now = 1_000_000;
  return { now: () => now, advance: (seconds: number) => (now += seconds * 1000) };
}

describe("EngineHealth", () => {
  it("ejects after N consecutive errors; a success in between resets the count", () => {
    const time = clock();
    const ejected: Array<[string, number]> = [];
    const health = new EngineHealth(settings, time.now, (engine, seconds) => ejected.push([engine, seconds]));
    health.failed(A);
    health.failed(A);
    health.succeeded(A);
    health.failed(A);
    health.failed(A);
    expect(health.eligible(A)).toBe(true);
    health.failed(A);
    expect(health.eligible(A)).toBe(false);
    expect(health.eligible(B)).toBe(true);
    expect(ejected).toEqual([[A, 10]]);
  });

  it("backs off longer on each ejection in a row, capped; failures while ejected do not count", () => {
    const time = clock();
    const ejected: number[] = [];
    const health = new EngineHealth(settings, time.now, (_engine, seconds) => ejected.push(seconds));
    const fail = (times: number) => Array.from({ length: times }, () => health.failed(A));
    fail(3);
    fail(10);
    time.advance(9.9);
    expect(health.eligible(A)).toBe(false);
    time.advance(0.1);
    expect(health.eligible(A)).toBe(true);
    fail(3);
    time.advance(20);
    fail(3);
    expect(ejected).toEqual([10, 20, 25]);
    time.advance(25);
    health.succeeded(A);
    fail(3);
    expect(ejected).toEqual([10, 20, 25, 10]);
  });

  it("warms an engine up linearly after its ejection ends, and a new engine too", () => {
    const time = clock();
    const health = new EngineHealth(settings, time.now);
    for (let i = 0; i < 3; i++) health.failed(A);
    expect(health.coldness(A)).toBe(1);
    time.advance(10);
    expect(health.coldness(A)).toBe(1);
    time.advance(5);
    expect(health.coldness(A)).toBeCloseTo(0.75);
    time.advance(15);
    expect(health.coldness(A)).toBe(0);
    health.added(B);
    time.advance(10);
    expect(health.coldness(B)).toBeCloseTo(0.5);
  });

  it("never ejects with ejectAfterErrors 0", () => {
    const health = new EngineHealth({ ...settings, ejectAfterErrors: 0 });
    for (let i = 0; i < 100; i++) health.failed(A);
    expect(health.eligible(A)).toBe(true);
  });
});

describe("Picker with engine health", () => {
  const engines = ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1"];
  const directory = new PoolDirectory([{ name: "p", models: ["m"], endpoints: engines }]);
  const pickerSettings = schedulingDefaults;

  it("leaves an ejected engine out; with every engine ejected, picks among all", async () => {
    const time = clock();
    const health = new EngineHealth(settings, time.now);
    const store = new MemoryLoadStore();
    const picker = new Picker(store, () => directory, pickerSettings, { availability: health });
    for (let i = 0; i < 3; i++) health.failed(engines[0]!);
    for (let i = 0; i < 30; i++) {
      const result = await picker.pick({ id: `r${i}`, model: "m", promptTokens: 10 });
      expect(result.kind === "picked" && result.reservation.engine).not.toBe(engines[0]);
    }
    for (const engine of engines) for (let i = 0; i < 3; i++) health.failed(engine);
    expect((await picker.pick({ id: "all-out", model: "m", promptTokens: 10 })).kind).toBe("picked");
  });

  it("slow start: an engine just back takes a growing share, not a stampede", async () => {
    const time = clock();
    const health = new EngineHealth(settings, time.now);
    const cold = engines[3]!;
    for (let i = 0; i < 3; i++) health.failed(cold);
    time.advance(10);
    /** Share of 100 concurrent picks (none released) the cold engine takes, `seconds` into its warm-up. */
    const shareAt = async (seconds: number): Promise<number> => {
      const store = new MemoryLoadStore();
      const picker = new Picker(store, () => directory, pickerSettings, { availability: health });
      time.advance(seconds);
      let taken = 0;
      for (let i = 0; i < 100; i++) {
        const result = await picker.pick({ id: `s${seconds}-${i}`, model: "m", promptTokens: 100 });
        if (result.kind === "picked" && result.reservation.engine === cold) taken += 1;
      }
      return taken;
    };
    const early = await shareAt(1);
    const middle = await shareAt(9);
    const warm = await shareAt(15);
    expect(early).toBeLessThan(10);
    expect(middle).toBeGreaterThan(early);
    expect(middle).toBeLessThan(25);
    expect(warm).toBe(25);
  });
});
