import { pino } from "pino";
import { describe, expect, it } from "vitest";
import type { ExplainedPick } from "../../src/scheduling/explanation.js";
import { PickHistory } from "../../src/scheduling/pick-history.js";
import { LogCapture } from "../support/sidecar.js";

const pick = (n: number): ExplainedPick => ({
  at: n,
  id: `id-${n}`,
  requestId: `r-${n}`,
  model: "llama",
  pool: "llama",
  engines: 1,
  removed: {},
  candidates: 1,
  weighed: [1],
  scored: [{ engine: "10.0.0.1:8000", scores: {}, bias: 0 }],
  loadWeights: { requests: 1, prefillRequests: 0, prefillTokens: 0, tokensHeld: 0 },
  unitWeights: { requests: 0, prefillRequests: 0, prefillTokens: 0, tokensHeld: 0 },
  maxRequests: 0,
  maxPrefillRequests: 0,
  outcome: "picked",
  engine: "10.0.0.1:8000",
  fallbacks: [],
});

const ids = (picks: ExplainedPick[]): string[] => picks.map((p) => p.id);
const silent = pino({ level: "silent" });

describe("PickHistory", () => {
  it("keeps the last picks, newest first, and never more than its size", () => {
    const history = new PickHistory(3, silent);
    expect(history.recent()).toEqual([]);
    history.record(pick(1));
    history.record(pick(2));
    expect(ids(history.recent())).toEqual(["id-2", "id-1"]);
    for (let n = 3; n <= 10; n++) history.record(pick(n));
    expect(ids(history.recent())).toEqual(["id-10", "id-9", "id-8"]);
    expect(ids(history.recent(2))).toEqual(["id-10", "id-9"]);
    expect(ids(history.recent(50))).toEqual(["id-10", "id-9", "id-8"]);
  });

  it("keeps the newest that fit when a reload resizes it, and goes on in order", () => {
    const history = new PickHistory(5, silent);
    for (let n = 1; n <= 7; n++) history.record(pick(n));
    history.resize(2);
    expect(ids(history.recent())).toEqual(["id-7", "id-6"]);
    history.record(pick(8));
    expect(ids(history.recent())).toEqual(["id-8", "id-7"]);
    history.resize(4);
    history.record(pick(9));
    expect(ids(history.recent())).toEqual(["id-9", "id-8", "id-7"]);
    history.record(pick(10));
    history.record(pick(11));
    expect(ids(history.recent())).toEqual(["id-11", "id-10", "id-9", "id-8"]);
    history.resize(0);
    history.record(pick(12));
    expect(history.recent()).toEqual([]);
    expect(history.size).toBe(0);
  });

  it("wants explanations only while it keeps some or debug logging is on, read per pick", () => {
    const log = pino({ level: "info" }, new LogCapture());
    const history = new PickHistory(0, log);
    expect(history.wanted()).toBe(false);
    log.level = "debug";
    expect(history.wanted()).toBe(true);
    log.level = "info";
    history.resize(1);
    expect(history.wanted()).toBe(true);
  });

  it("logs each pick at debug level with the content it keeps, and nothing above debug", () => {
    const capture = new LogCapture();
    const log = pino({ level: "info" }, capture);
    const history = new PickHistory(0, log);
    history.record(pick(1));
    expect(capture.lines).toEqual([]);
    log.level = "debug";
    history.record(pick(2));
    expect(capture.withMessage("pick")).toEqual([expect.objectContaining({ level: 20, ...pick(2) })]);
  });
});
