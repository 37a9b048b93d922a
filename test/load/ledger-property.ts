import fc from "fast-check";
import { expect } from "vitest";
import { type EngineLoad, type LoadStore, type PickRequest, zeroLoad } from "../../src/load/store.js";

export const ENGINES = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"];

/** A pick over ENGINES weighing the four load numbers evenly. */
export const pickOf = (id: string, promptTokens: number): PickRequest => ({
  id,
  pool: "p",
  candidates: ENGINES,
  bias: ENGINES.map(() => 0),
  loadWeights: { requests: 0.25, prefillRequests: 0.25, prefillTokens: 0.25, tokensHeld: 0.25 },
  promptTokens,
  maxRequests: 0,
  fallbacks: 0,
  tieBreak: 0,
});

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

async function actualLoads(store: LoadStore): Promise<Map<string, EngineLoad>> {
  const loads = new Map<string, EngineLoad>();
  for (const [engine, { requests, prefillRequests, prefillTokens, tokensHeld }] of await store.loads(ENGINES)) {
    loads.set(engine, { requests, prefillRequests, prefillTokens, tokensHeld });
  }
  return loads;
}

/** One pool's numbers on each engine, zero where it counted nothing. */
async function actualPoolLoads(store: LoadStore, pool: string): Promise<Map<string, EngineLoad>> {
  const counted = await store.poolLoads(pool);
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

export const step: fc.Arbitrary<Step> = fc.oneof(
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

/**
 * The ledger invariant, for any store: through any interleaving of operations every counter (per
 * engine, and per pool and engine) equals the sum over the open reservations, and all end at zero.
 * `open` makes a fresh, empty store reading the clock it is given.
 */
export async function checkLedger(open: (clock: () => number) => Promise<{ store: LoadStore; close(): Promise<void> }>, numRuns: number, maxSteps = 300): Promise<void> {
  await fc.assert(
      fc.asyncProperty(fc.array(step, { maxLength: maxSteps }), fc.nat(), async (steps, seed) => {
        let now = 0;
        let random = seed;
        const opened = await open(() => now);
        const store = opened.store;
        try {
        const tieBreak = (): number => (random = (random * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
        const open = new Map<string, ModelEntry>();
        let next = 0;
        const pickTarget = (index: number): string | undefined => [...open.keys()][index % Math.max(open.size, 1)];

        for (const s of steps) {
          switch (s.op) {
            case "pick": {
              const id = `r${next++}`;
              const outcome = await store.pickAndReserve({ ...pickOf(id, s.prompt), tieBreak: tieBreak() });
              if (outcome.kind !== "reserved") throw new Error(`pick: ${outcome.kind}`);
              open.set(id, { pool: "p", engine: outcome.reservation.engine, prompt: s.prompt, generated: 0, inPrefill: true, openedAt: now });
              break;
            }
            case "reserve": {
              const id = `r${next++}`;
              const [pool, engine] = [POOLS[s.pool]!, ENGINES[s.engine]!];
              expect((await store.reserve({ id, pool, engine, promptTokens: s.prompt })).kind).toBe("reserved");
              expect((await store.reserve({ id, pool, engine, promptTokens: s.prompt })).kind).toBe("duplicate");
              open.set(id, { pool, engine, prompt: s.prompt, generated: 0, inPrefill: true, openedAt: now });
              break;
            }
            case "firstToken": {
              const id = pickTarget(s.target);
              if (id === undefined) break;
              await store.firstToken(id);
              await store.firstToken(id);
              open.get(id)!.inPrefill = false;
              break;
            }
            case "generate": {
              const id = pickTarget(s.target);
              if (id === undefined) break;
              await store.addGenerated(id, s.tokens);
              open.get(id)!.generated += s.tokens;
              break;
            }
            case "reconcile": {
              const id = pickTarget(s.target);
              if (id === undefined) break;
              await store.reconcile(id, { promptTokens: s.prompt, completionTokens: s.completion });
              Object.assign(open.get(id)!, { prompt: s.prompt, generated: s.completion });
              break;
            }
            case "release": {
              const id = pickTarget(s.target);
              if (id === undefined) break;
              expect(await store.release(id, "ok")).toBe(true);
              expect(await store.release(id, "ok")).toBe(false);
              open.delete(id);
              break;
            }
            case "move": {
              const id = pickTarget(s.target);
              if (id === undefined) {
                expect(await store.move("never-opened", ENGINES[s.engine]!)).toBe(false);
                break;
              }
              expect(await store.move(id, ENGINES[s.engine]!)).toBe(true);
              open.get(id)!.engine = ENGINES[s.engine]!;
              break;
            }
            case "tick":
              now += s.ms;
              break;
            case "expire": {
              const stale = [...open].filter(([, entry]) => entry.openedAt <= now - s.ttl).map(([id]) => id);
              expect(await store.expire(s.ttl)).toBe(stale.length);
              for (const id of stale) open.delete(id);
              break;
            }
          }
          expect(await actualLoads(store)).toEqual(expectedLoads(open));
          for (const pool of POOLS) expect(await actualPoolLoads(store, pool)).toEqual(expectedLoads(open, pool));
          expect(await store.size()).toBe(open.size);
        }
        for (const id of open.keys()) await store.release(id, "ok");
        expect(await actualLoads(store)).toEqual(expectedLoads(new Map()));
        for (const pool of POOLS) expect(await actualPoolLoads(store, pool)).toEqual(expectedLoads(new Map()));
        expect(await store.size()).toBe(0);
        } finally {
          await opened.close();
        }
      }),
      { numRuns },
    );
}

