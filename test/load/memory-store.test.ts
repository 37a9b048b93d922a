import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MemoryLoadStore } from "../../src/load/memory-store.js";
import { zeroLoad, type EngineLoad } from "../../src/load/store.js";
import { leastLoaded, defaultWeights } from "../../src/scheduling/score.js";

const ENGINES = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"];

const POOLS = ["p", "q"];

interface ModelEntry {
  pool: string;
  engine: string;
  prompt: number;
  generated: number;
  inPrefill: boolean;
  openedAt: number;
}

/** The invariant: each engine's numbers (of one pool, or of all) are exactly the sums over its open reservations. */
function expectedLoads(open: Map<string, ModelEntry>, pool?: string): Map<string, EngineLoad> {
  const loads = new Map(ENGINES.map((engine) => [engine, zeroLoad()]));
  for (const entry of open.values()) {
    if (pool !== undefined && entry.pool !== pool) continue;
    const load = loads.get(entry.engine) ?? zeroLoad();
    load.requests += 1;
    load.tokensHeld += entry.prompt + entry.generated;
    if (entry.inPrefill) {
      load.prefillRequests += 1;
      load.prefillTokens += entry.prompt;
    }
    loads.set(entry.engine, load);
  }
  return loads;
}

function actualLoads(store: MemoryLoadStore): Map<string, EngineLoad> {
  const loads = new Map<string, EngineLoad>();
  for (const [engine, { requests, prefillRequests, prefillTokens, tokensHeld }] of store.loads(ENGINES)) {
    loads.set(engine, { requests, prefillRequests, prefillTokens, tokensHeld });
  }
  return loads;
}

/** One pool's numbers on each engine, zero where it counted nothing. */
function actualPoolLoads(store: MemoryLoadStore, pool: string): Map<string, EngineLoad> {
  const counted = store.poolLoads(pool);
  expect([...counted.keys()].every((engine) => ENGINES.includes(engine))).toBe(true);
  return new Map(
    ENGINES.map((engine) => {
      const { requests, prefillRequests, prefillTokens, tokensHeld } = counted.get(engine) ?? zeroLoad();
      return [engine, { requests, prefillRequests, prefillTokens, tokensHeld }];
    }),
  );
}

type Step =
  | { op: "pick"; prompt: number }
  | { op: "reserve"; pool: number; engine: number; prompt: number }
  | { op: "firstToken"; target: number }
  | { op: "generate"; target: number; tokens: number }
  | { op: "reconcile"; target: number; prompt: number; completion: number }
  | { op: "release"; target: number }
  | { op: "move"; target: number; engine: number }
  | { op: "tick"; ms: number }
  | { op: "expire"; ttl: number };

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ op: fc.constant("pick" as const), prompt: fc.nat(5000) }),
  fc.record({ op: fc.constant("reserve" as const), pool: fc.nat(POOLS.length - 1), engine: fc.nat(ENGINES.length - 1), prompt: fc.nat(5000) }),
  fc.record({ op: fc.constant("firstToken" as const), target: fc.nat() }),
  fc.record({ op: fc.constant("generate" as const), target: fc.nat(), tokens: fc.integer({ min: 1, max: 50 }) }),
  fc.record({ op: fc.constant("reconcile" as const), target: fc.nat(), prompt: fc.nat(5000), completion: fc.nat(500) }),
  fc.record({ op: fc.constant("release" as const), target: fc.nat() }),
  fc.record({ op: fc.constant("move" as const), target: fc.nat(), engine: fc.nat(ENGINES.length - 1) }),
  fc.record({ op: fc.constant("tick" as const), ms: fc.integer({ min: 1, max: 1000 }) }),
  fc.record({ op: fc.constant("expire" as const), ttl: fc.integer({ min: 1, max: 3000 }) }),
);

describe("MemoryLoadStore ledger", () => {
  it("keeps every counter (per engine, and per pool and engine) equal to the sum of open reservations, through any interleaving, and ends at zero", () => {
    fc.assert(
      fc.property(fc.array(step, { maxLength: 300 }), fc.nat(), (steps, seed) => {
        let now = 0;
        let random = seed;
        const store = new MemoryLoadStore(() => now);
        const choose = leastLoaded(defaultWeights, () => ((random = (random * 1103515245 + 12345) % 2 ** 31) / 2 ** 31));
        const open = new Map<string, ModelEntry>();
        let next = 0;
        const pickTarget = (index: number): string | undefined => [...open.keys()][index % Math.max(open.size, 1)];

        for (const s of steps) {
          switch (s.op) {
            case "pick": {
              const id = `r${next++}`;
              const outcome = store.pickAndReserve({ id, pool: "p", candidates: ENGINES, promptTokens: s.prompt, choose, maxRequests: 0, fallbacks: 0 });
              if (outcome.kind !== "reserved") throw new Error(`pick: ${outcome.kind}`);
              open.set(id, { pool: "p", engine: outcome.reservation.engine, prompt: s.prompt, generated: 0, inPrefill: true, openedAt: now });
              break;
            }
            case "reserve": {
              const id = `r${next++}`;
              const [pool, engine] = [POOLS[s.pool]!, ENGINES[s.engine]!];
              expect(store.reserve({ id, pool, engine, promptTokens: s.prompt })).toBe(true);
              expect(store.reserve({ id, pool, engine, promptTokens: s.prompt })).toBe(false);
              open.set(id, { pool, engine, prompt: s.prompt, generated: 0, inPrefill: true, openedAt: now });
              break;
            }
            case "firstToken": {
              const id = pickTarget(s.target);
              if (id === undefined) break;
              store.firstToken(id);
              store.firstToken(id);
              open.get(id)!.inPrefill = false;
              break;
            }
            case "generate": {
              const id = pickTarget(s.target);
              if (id === undefined) break;
              store.addGenerated(id, s.tokens);
              open.get(id)!.generated += s.tokens;
              break;
            }
            case "reconcile": {
              const id = pickTarget(s.target);
              if (id === undefined) break;
              store.reconcile(id, { promptTokens: s.prompt, completionTokens: s.completion });
              Object.assign(open.get(id)!, { prompt: s.prompt, generated: s.completion });
              break;
            }
            case "release": {
              const id = pickTarget(s.target);
              if (id === undefined) break;
              expect(store.release(id, "ok")).toBe(true);
              expect(store.release(id, "ok")).toBe(false);
              open.delete(id);
              break;
            }
            case "move": {
              const id = pickTarget(s.target);
              if (id === undefined) {
                expect(store.move("never-opened", ENGINES[s.engine]!)).toBe(false);
                break;
              }
              expect(store.move(id, ENGINES[s.engine]!)).toBe(true);
              open.get(id)!.engine = ENGINES[s.engine]!;
              break;
            }
            case "tick":
              now += s.ms;
              break;
            case "expire": {
              const stale = [...open].filter(([, entry]) => entry.openedAt <= now - s.ttl).map(([id]) => id);
              expect(store.expire(s.ttl)).toBe(stale.length);
              for (const id of stale) open.delete(id);
              break;
            }
          }
          expect(actualLoads(store)).toEqual(expectedLoads(open));
          for (const pool of POOLS) expect(actualPoolLoads(store, pool)).toEqual(expectedLoads(open, pool));
          expect(store.size()).toBe(open.size);
        }
        for (const id of open.keys()) store.release(id, "ok");
        expect(actualLoads(store)).toEqual(expectedLoads(new Map()));
        for (const pool of POOLS) expect(actualPoolLoads(store, pool)).toEqual(expectedLoads(new Map()));
        expect(store.size()).toBe(0);
      }),
      { numRuns: 200 },
    );
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
    const choose = () => 0;
    const request = { id: "x", pool: "p", candidates: ENGINES, promptTokens: 10, choose, maxRequests: 0, fallbacks: 0 };
    expect(store.pickAndReserve(request).kind).toBe("reserved");
    expect(store.pickAndReserve(request)).toEqual({ kind: "none" });
    expect(store.loads([ENGINES[0]!]).get(ENGINES[0]!)?.requests).toBe(1);
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
