import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MemoryLoadStore } from "../../src/load/memory-store.js";
import { zeroLoad } from "../../src/load/store.js";
import { ENGINES, checkLedger, pickOf } from "./ledger-property.js";

describe("MemoryLoadStore ledger", () => {
  it("keeps every counter (per engine, and per pool and engine) equal to the sum of open reservations, through any interleaving, and ends at zero", async () => {
    await checkLedger(async (clock) => ({ store: new MemoryLoadStore(clock), close: async () => undefined }), 200);
  });

  it("lists per pool the engines it counted, idle ones at zero until they expire, as the Go service lists a cluster's engines", () => {
    let now = 0;
    const store = new MemoryLoadStore(() => now);
    store.reserve({ id: "a", pool: "p1", engine: "10.0.0.1:1", promptTokens: 1 });
    store.reserve({ id: "b", pool: "p2", engine: "10.0.0.2:1", promptTokens: 1 });
    expect([...store.poolLoads("p1")]).toEqual([["10.0.0.1:1", { requests: 1, prefillRequests: 1, prefillTokens: 1, tokensHeld: 1, updatedAt: 0 }]]);
    expect(store.pools().sort()).toEqual(["p1", "p2"]);
    expect(store.has("a")).toBe(true);
    now = 10;
    store.release("a", "ok");
    expect(store.has("a")).toBe(false);
    expect([...store.poolLoads("p1")]).toEqual([["10.0.0.1:1", { requests: 0, prefillRequests: 0, prefillTokens: 0, tokensHeld: 0, updatedAt: 10 }]]);
    store.move("b", "10.0.0.3:1");
    expect([...store.poolLoads("p2").keys()]).toEqual(["10.0.0.2:1", "10.0.0.3:1"]);
    expect(store.poolLoads("p2").get("10.0.0.3:1")?.requests).toBe(1);
    now = 20;
    expect(store.expire(15)).toBe(1);
    expect(store.pools().sort()).toEqual(["p1", "p2"]);
    now = 40;
    store.expire(15);
    expect(store.pools()).toEqual([]);
    expect(store.poolLoads("p1").size).toBe(0);
  });

  it("counts one engine under two pools as two counters, and picks weigh their sum", () => {
    const store = new MemoryLoadStore();
    store.reserve({ id: "a", pool: "p1", engine: "10.0.0.1", promptTokens: 5 });
    store.reserve({ id: "b", pool: "p2", engine: "10.0.0.1", promptTokens: 7 });
    store.reserve({ id: "c", pool: "p2", engine: "10.0.0.1", promptTokens: 1 });
    expect(store.poolLoads("p1").get("10.0.0.1")).toMatchObject({ requests: 1, prefillTokens: 5 });
    expect(store.poolLoads("p2").get("10.0.0.1")).toMatchObject({ requests: 2, prefillTokens: 8 });
    expect(store.loads([]).get("10.0.0.1")).toMatchObject({ requests: 3, prefillTokens: 13 });
    for (const id of ["a", "b", "c"]) store.release(id, "ok");
    expect(store.poolLoads("p2").get("10.0.0.1")).toMatchObject({ requests: 0, prefillTokens: 0, tokensHeld: 0 });
  });

  it("counts only non-negative integers, and never past 2^53 − 1 on an engine, so sums stay exact and release to exactly zero", () => {
    const store = new MemoryLoadStore();
    const engine = "10.0.0.1:1";
    const load = () => store.loads([engine]).get(engine)!;
    store.reserve({ id: "a", pool: "p", engine, promptTokens: 2 ** 52 });
    store.reserve({ id: "b", pool: "q", engine, promptTokens: 2 ** 52 });
    store.reserve({ id: "c", pool: "p", engine, promptTokens: 5 });
    expect(load()).toMatchObject({ requests: 3, prefillTokens: Number.MAX_SAFE_INTEGER, tokensHeld: Number.MAX_SAFE_INTEGER });
    expect(store.poolLoads("q").get(engine)).toMatchObject({ prefillTokens: 2 ** 52 - 1 });
    store.addGenerated("c", 10);
    store.reconcile("c", { promptTokens: 100, completionTokens: 100 });
    expect(load().tokensHeld).toBe(Number.MAX_SAFE_INTEGER);
    for (const [id, tokens] of [["d", Number.NaN], ["e", Number.POSITIVE_INFINITY], ["f", -5], ["g", 1e400]] as const) {
      store.reserve({ id, pool: "p", engine: "10.0.0.2:1", promptTokens: tokens });
    }
    store.reserve({ id: "h", pool: "p", engine: "10.0.0.2:1", promptTokens: 1.5 });
    store.addGenerated("h", Number.NaN);
    store.reconcile("h", { promptTokens: Number.NaN, completionTokens: 1 });
    store.reconcile("h", { promptTokens: 1e300, completionTokens: 1 });
    expect(store.loads(["10.0.0.2:1"]).get("10.0.0.2:1")).toMatchObject({ requests: 5, prefillTokens: 1, tokensHeld: 1 });
    store.move("h", engine);
    expect(load().tokensHeld).toBe(Number.MAX_SAFE_INTEGER);
    for (const id of ["a", "b", "c", "d", "e", "f", "g", "h"]) store.release(id, "ok");
    for (const snapshot of store.loads([]).values()) expect(snapshot).toMatchObject(zeroLoad());
    for (const pool of ["p", "q"]) for (const snapshot of store.poolLoads(pool).values()) expect(snapshot).toMatchObject(zeroLoad());
  });

  it("keeps every counter a finite non-negative integer through any interleaving of huge or invalid counts", () => {
    const count = fc.oneof(fc.nat(), fc.constantFrom(2 ** 31 - 1, 2 ** 52, 2 ** 53, Number.MAX_VALUE, Number.NaN, -1, 0.5, Number.POSITIVE_INFINITY));
    const op = fc.oneof(
      fc.record({ op: fc.constant("reserve" as const), engine: fc.nat(1), tokens: count }),
      fc.record({ op: fc.constant("generate" as const), target: fc.nat(), tokens: count }),
      fc.record({ op: fc.constant("reconcile" as const), target: fc.nat(), tokens: count, more: count }),
      fc.record({ op: fc.constant("firstToken" as const), target: fc.nat() }),
      fc.record({ op: fc.constant("move" as const), target: fc.nat(), engine: fc.nat(1) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const store = new MemoryLoadStore();
        const ids: string[] = [];
        const target = (index: number): string => ids[index % Math.max(1, ids.length)] ?? "none";
        for (const step of ops) {
          if (step.op === "reserve") store.reserve({ id: `r${ids.push(`r${ids.length}`) - 1}`, pool: "p", engine: ENGINES[step.engine]!, promptTokens: step.tokens });
          else if (step.op === "generate") store.addGenerated(target(step.target), step.tokens);
          else if (step.op === "reconcile") store.reconcile(target(step.target), { promptTokens: step.tokens, completionTokens: step.more });
          else if (step.op === "firstToken") store.firstToken(target(step.target));
          else store.move(target(step.target), ENGINES[step.engine]!);
          for (const snapshot of [...store.loads([]).values(), ...store.poolLoads("p").values()]) {
            for (const value of [snapshot.requests, snapshot.prefillRequests, snapshot.prefillTokens, snapshot.tokensHeld]) {
              expect(Number.isSafeInteger(value) && value >= 0).toBe(true);
            }
          }
        }
        for (const id of ids) store.release(id, "ok");
        for (const snapshot of [...store.loads([]).values(), ...store.poolLoads("p").values()]) expect(snapshot).toMatchObject(zeroLoad());
      }),
      { numRuns: 300 },
    );
  });

  it("refuses to open an id twice, so a duplicate never double counts", () => {
    const store = new MemoryLoadStore();
    const request = pickOf("x", 10);
    expect(store.pickAndReserve(request).kind).toBe("reserved");
    expect(store.pickAndReserve(request)).toEqual({ kind: "duplicate" });
    expect(store.loads([ENGINES[0]!]).get(ENGINES[0]!)?.requests).toBe(1);
  });

  it("reserves within a bound only, on the pool's own numbers, and says why not", () => {
    const store = new MemoryLoadStore();
    const engine = ENGINES[0]!;
    const bound = { maxRequests: 2, maxPrefillTokens: 150 };
    store.reserve({ id: "other-pool", pool: "q", engine, promptTokens: 1000 });
    expect(store.reserve({ id: "a", pool: "p", engine, promptTokens: 100, bound }).kind).toBe("reserved");
    expect(store.reserve({ id: "b", pool: "p", engine, promptTokens: 100, bound })).toMatchObject({ kind: "over_bound", load: { requests: 1, prefillTokens: 100 } });
    expect(store.reserve({ id: "a", pool: "p", engine, promptTokens: 10, bound }).kind).toBe("duplicate");
    expect(store.reserve({ id: "c", pool: "p", engine, promptTokens: 50, bound }).kind).toBe("reserved");
    expect(store.reserve({ id: "d", pool: "p", engine, promptTokens: 0, bound }).kind).toBe("over_bound");
    store.firstToken("a");
    expect(store.reserve({ id: "d", pool: "p", engine, promptTokens: 0, bound: { maxPrefillTokens: 150 } }).kind).toBe("reserved");
    expect(store.poolLoads("p").get(engine)).toMatchObject({ requests: 3, prefillTokens: 50 });
  });

  it("drops idle engines not updated within the TTL", () => {
    let now = 0;
    const store = new MemoryLoadStore(() => now);
    store.reserve({ id: "a", pool: "p", engine: "10.0.0.9:1", promptTokens: 1 });
    store.release("a", "ok");
    expect(store.loads([]).has("10.0.0.9:1")).toBe(true);
    now = 10_000;
    store.expire(5_000);
    expect(store.loads([]).has("10.0.0.9:1")).toBe(false);
  });
});
