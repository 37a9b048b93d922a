import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { FAST_MODEL } from "./models.js";
import type { EngineModel, EngineRequest } from "./scheduler.js";
import { StepLoop, type SequenceListener } from "./step-loop.js";

// The loop reads performance.now() and arms setTimeout: both are the test's. `now` is the wall
// clock; the fake timers' clock trails it until `advance` lets the timers due fire, so a timer
// can fire late (the clock moved on while the event loop was busy) exactly when the test says.
let now = 0;
let timersAt = 0;
beforeEach(() => {
  now = 0;
  timersAt = 0;
  vi.spyOn(performance, "now").mockImplementation(() => now);
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
});
afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

/** The event loop was busy for `ms`: no timer fired meanwhile. */
const busy = (ms: number): void => {
  now += ms;
};
/** `ms` pass, a millisecond at a time, each timer firing once due (late, if `busy` moved the clock past it). */
const advance = (ms: number): void => {
  for (let passed = 0; passed <= ms; passed += 1) {
    if (passed > 0) now += 1;
    vi.advanceTimersByTime(now - timersAt);
    timersAt = now;
  }
};

// Steps of 10 ms, 1 ms more per decoded sequence, prefill free: every step ends on a whole ms.
const model: EngineModel = { ...FAST_MODEL, stepBaseMs: 10, decodeMsPerSequence: 1, prefillMsPerToken: 0 };

interface Heard {
  admitted: number[];
  tokensAt: number[];
  finishedAt: number | undefined;
}

function sequence(id: string, outputTokens: number, promptTokens = 8): { request: EngineRequest; listener: SequenceListener; heard: Heard } {
  const heard: Heard = { admitted: [], tokensAt: [], finishedAt: undefined };
  const listener: SequenceListener = {
    admitted: (cached) => void heard.admitted.push(cached),
    tokens: (count) => {
      for (let i = 0; i < count; i++) heard.tokensAt.push(now);
    },
    finished: () => {
      heard.finishedAt = now;
    },
  };
  return { request: { id, promptTokens, blockHashes: [], outputTokens }, listener, heard };
}

describe("StepLoop", () => {
  it("applies each step once its modelled duration has passed, and tells the end after the last token", () => {
    const loop = new StepLoop(model);
    const a = sequence("a", 3);
    loop.add([a]);
    advance(9);
    expect(a.heard.tokensAt).toEqual([]);
    expect(loop.running).toBe(1);
    advance(1);
    // Prefill step 10 ms, then decode steps of 10 + 1.
    advance(22);
    expect(a.heard).toEqual({ admitted: [0], tokensAt: [10, 21, 32], finishedAt: 32 });
    expect(loop.running).toBe(0);
    expect(loop.steps).toEqual({ steps: 3, lateMs: { total: 0, max: 0 } });
  });

  it("counts a sequence as running until the step that makes its last token ends", () => {
    const loop = new StepLoop(model);
    loop.add([sequence("a", 1)]);
    // The scheduler let go of it when it planned the step; its token is not out yet.
    expect(loop.running).toBe(1);
    advance(10);
    expect(loop.running).toBe(0);
  });

  it("catches a late timer up: the steps due meanwhile are applied at once, the next one on the model's clock", () => {
    const loop = new StepLoop(model);
    const a = sequence("a", 5);
    loop.add([a]);
    busy(30);
    advance(0);
    // The steps ending at 10 and 21 were due: both out at once; the third still ends at 32.
    expect(a.heard.tokensAt).toEqual([30, 30]);
    advance(2);
    expect(a.heard.tokensAt).toEqual([30, 30, 32]);
    advance(22);
    expect(a.heard.tokensAt).toEqual([30, 30, 32, 43, 54]);
    expect(loop.steps.lateMs).toEqual({ total: 20 + 9, max: 20 });
  });

  it("never starts a step before the requests it admits arrived, however late the timer", () => {
    const loop = new StepLoop(model);
    const a = sequence("a", 10);
    const b = sequence("b", 1);
    loop.add([a]);
    busy(22);
    // B arrives while the first step's timer (due at 10) has not fired yet; it fires at 25.
    loop.add([b]);
    busy(3);
    advance(0);
    // The step after the first would have started at 10; it admits B, so it starts at 22 and
    // lasts 10 + 1 (A's decode): B's first token 11 ms after it arrived, not 3.
    expect(a.heard.tokensAt).toEqual([25]);
    expect(b.heard.tokensAt).toEqual([]);
    advance(8);
    expect(b.heard.tokensAt).toEqual([33]);
    expect(a.heard.tokensAt).toEqual([25, 33]);
  });

  it("takes the sequences added together into the same step", () => {
    const loop = new StepLoop(model);
    const [a, b] = [sequence("a", 2), sequence("b", 2)];
    loop.add([a, b]);
    advance(10);
    expect([a.heard.tokensAt, b.heard.tokensAt]).toEqual([[10], [10]]);
  });

  it("tells nothing more of an aborted sequence, wherever it was, and frees its place", () => {
    const loop = new StepLoop({ ...model, maxRunning: 1 });
    const [a, b, c] = [sequence("a", 5), sequence("b", 5), sequence("c", 1)];
    loop.add([a]);
    loop.add([b]);
    loop.add([c]);
    expect([loop.running, loop.waiting]).toEqual([1, 2]);
    advance(10);
    // Aborted inside its step, and while waiting.
    loop.abort("a");
    loop.abort("b");
    expect([loop.running, loop.waiting]).toEqual([0, 1]);
    advance(100);
    expect(a.heard.tokensAt).toEqual([10]);
    expect(a.heard.finishedAt).toBeUndefined();
    expect(b.heard.tokensAt).toEqual([]);
    expect(c.heard.finishedAt).toBeDefined();
  });

  it("after close() arms no step and tells nothing", () => {
    const loop = new StepLoop(model);
    const a = sequence("a", 5);
    loop.add([a]);
    loop.close();
    expect(vi.getTimerCount()).toBe(0);
    advance(100);
    expect(a.heard.tokensAt).toEqual([]);
    expect(() => loop.add([sequence("b", 1)])).toThrow(/closed/);
  });
});
