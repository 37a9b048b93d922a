import { randomUUID } from "node:crypto";
import fc from "fast-check";
import { type Cluster, Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FailOpenStore } from "../../src/load/fail-open-store.js";
import { MemoryLoadStore } from "../../src/load/memory-store.js";
import { connectRedis } from "../../src/load/redis/connect.js";
import { RedisLoadStore } from "../../src/load/redis/redis-store.js";
import { createLogger } from "../../src/log.js";
import type { PickRequest } from "../../src/load/store.js";
import { redisMissing, startRedis, startRedisCluster, type RedisServer } from "../support/redis.js";
import { ENGINES, checkLedger } from "./ledger-property.js";

if (redisMissing !== undefined) it.skip(`Redis store tests: ${redisMissing}`, () => undefined);

describe.skipIf(redisMissing !== undefined)("RedisLoadStore on a real redis-server", () => {
  let server: RedisServer;
  let redis: Redis;
  beforeAll(async () => {
    server = await startRedis(["--enable-debug-command", "yes"]);
    redis = new Redis(server.port, "127.0.0.1");
  });
  afterAll(async () => {
    redis.disconnect();
    await server.stop();
  });

  /** A plain pick in pool p among every engine, by requests alone; `changes` override any field. */
  const pickOf = (id: string, changes: Partial<PickRequest> = {}): PickRequest => ({
    id,
    pool: "p",
    candidates: ENGINES,
    bias: [0, 0, 0],
    loadWeights: { requests: 1, prefillRequests: 0, prefillTokens: 0, tokensHeld: 0 },
    promptTokens: 1,
    maxRequests: 0,
    fallbacks: 0,
    tieBreak: 0,
    ...changes,
  });

  /** A store on keys of its own, so each run starts empty. */
  const storeOn = (clock: () => number = Date.now, lease = randomUUID()) =>
    new RedisLoadStore(redis, { keyPrefix: `t-${randomUUID()}:`, lease, sweepEveryMs: 0, now: clock });

  it("keeps every counter equal to the sum of open reservations through any interleaving, and ends at zero (the ledger property)", async () => {
    await checkLedger(async (clock) => ({ store: storeOn(clock), close: async () => undefined }), 25, 150);
  }, 120_000);

  it("chooses exactly as the memory store does: same loads, biases, unit weights, bounds and tie-break, same engine, fallbacks and load weighed", async () => {
    const held = fc.array(fc.record({ engine: fc.nat(ENGINES.length - 1), prompt: fc.nat(4000), prefill: fc.boolean() }), { maxLength: 12 });
    const unit = fc.double({ min: 0, max: 0.01, noNaN: true });
    const unitWeights = fc.option(fc.record({ requests: unit, prefillRequests: unit, prefillTokens: unit, tokensHeld: unit }), { nil: undefined });
    const biases = fc.array(fc.double({ min: 0, max: 2, noNaN: true }), { minLength: 3, maxLength: 3 });
    await fc.assert(
      fc.asyncProperty(held, biases, unitWeights, fc.nat(5), fc.nat(3), fc.double({ min: 0, max: 0.999, noNaN: true }), fc.nat(2), async (reservations, bias, units, maxRequests, maxPrefillRequests, tieBreak, fallbacks) => {
        const memory = new MemoryLoadStore();
        const shared = storeOn();
        for (const [index, { engine, prompt, prefill }] of reservations.entries()) {
          for (const store of [memory, shared]) {
            await store.reserve({ id: `h${index}`, pool: "p", engine: ENGINES[engine]!, promptTokens: prompt });
            if (!prefill) await store.firstToken(`h${index}`);
          }
        }
        const pick: PickRequest = {
          id: "x",
          pool: "p",
          candidates: ENGINES,
          bias,
          loadWeights: { requests: 0.4, prefillRequests: 0.2, prefillTokens: 0.3, tokensHeld: 0.1 },
          unitWeights: units,
          promptTokens: 10,
          maxRequests,
          maxPrefillRequests,
          fallbacks,
          tieBreak,
        };
        expect(await shared.pickAndReserve(pick)).toEqual(memory.pickAndReserve(pick));
      }),
      { numRuns: 100 },
    );
  }, 60_000);

  it("sheds at maxRequests in the same atomic step, and refuses an id already open", async () => {
    const store = storeOn();
    const pick = (id: string): PickRequest => pickOf(id, { candidates: ENGINES.slice(0, 2), bias: [0, 0], maxRequests: 2 });
    const outcomes = await Promise.all(Array.from({ length: 6 }, (_, i) => store.pickAndReserve(pick(`r${i}`))));
    expect(outcomes.map((outcome) => outcome.kind).sort()).toEqual(["reserved", "reserved", "reserved", "reserved", "saturated", "saturated"]);
    expect((await store.pickAndReserve(pick("r0"))).kind).toBe("duplicate");
    expect([...(await store.poolLoads("p")).values()].map((load) => load.requests)).toEqual([2, 2]);
  });

  it("releases an id reserved through another replica's store, once, and lets the other replicas see it", async () => {
    const prefix = `t-${randomUUID()}:`;
    const [a, b] = [randomUUID(), randomUUID()].map((lease) => new RedisLoadStore(redis, { keyPrefix: prefix, lease, sweepEveryMs: 0 }));
    expect((await a!.reserve({ id: "api-1", pool: "p", engine: ENGINES[0]!, promptTokens: 100 })).kind).toBe("reserved");
    expect((await b!.reserve({ id: "api-1", pool: "p", engine: ENGINES[0]!, promptTokens: 100 })).kind).toBe("duplicate");
    expect((await b!.poolLoads("p")).get(ENGINES[0]!)).toMatchObject({ requests: 1, prefillTokens: 100 });
    expect(await b!.release("api-1", "ok")).toBe(true);
    expect(await a!.release("api-1", "ok")).toBe(false);
    expect((await a!.poolLoads("p")).get(ENGINES[0]!)).toMatchObject({ requests: 0, prefillTokens: 0, tokensHeld: 0 });
  });

  it("answers a bounded reserve exactly as the memory store does: reserved, duplicate or over_bound on the pool's own numbers", async () => {
    const step = fc.record({
      id: fc.nat(8),
      pool: fc.constantFrom("p", "q"),
      engine: fc.nat(ENGINES.length - 1),
      prompt: fc.nat(300),
      maxRequests: fc.option(fc.nat(4), { nil: undefined }),
      maxPrefillTokens: fc.option(fc.nat(800), { nil: undefined }),
      then: fc.constantFrom("keep", "first_token", "release"),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(step, { maxLength: 25 }), async (steps) => {
        const clock = () => 1_000_000;
        const memory = new MemoryLoadStore(clock);
        const shared = storeOn(clock);
        for (const { id, pool, engine, prompt, maxRequests, maxPrefillTokens, then } of steps) {
          const request = { id: `b${id}`, pool, engine: ENGINES[engine]!, promptTokens: prompt, bound: { maxRequests, maxPrefillTokens } };
          const outcome = memory.reserve(request);
          expect(await shared.reserve(request)).toEqual(outcome);
          if (then === "first_token") for (const store of [memory, shared]) await store.firstToken(request.id);
          if (then === "release") for (const store of [memory, shared]) await store.release(request.id, "ok");
        }
        for (const pool of ["p", "q"]) expect(await shared.poolLoads(pool)).toEqual(memory.poolLoads(pool));
      }),
      { numRuns: 60 },
    );
  }, 60_000);

  it("never lets concurrent bounded reserves from several replicas carry an engine past the bound", async () => {
    const prefix = `t-${randomUUID()}:`;
    const replicas = [0, 1, 2].map(() => new Redis(server.port, "127.0.0.1"));
    const stores = replicas.map((client) => new RedisLoadStore(client, { keyPrefix: prefix, lease: randomUUID(), sweepEveryMs: 0 }));
    const outcomes = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        stores[i % 3]!.reserve({ id: `c${i}`, pool: "p", engine: ENGINES[i % 2]!, promptTokens: 100, bound: { maxRequests: 7, maxPrefillTokens: 600 } }),
      ),
    );
    for (const client of replicas) client.disconnect();
    expect(outcomes.filter((outcome) => outcome.kind === "reserved")).toHaveLength(12);
    const loads = await new RedisLoadStore(redis, { keyPrefix: prefix, lease: "reader", sweepEveryMs: 0 }).poolLoads("p");
    expect([...loads.values()].map(({ requests, prefillTokens }) => ({ requests, prefillTokens }))).toEqual([
      { requests: 6, prefillTokens: 600 },
      { requests: 6, prefillTokens: 600 },
    ]);
  });

  it("opens a caller's id once even when replicas add it to different pools at the same time, and releases it to zero", async () => {
    const prefix = `t-${randomUUID()}:`;
    const replicas = [0, 1, 2].map(() => new Redis(server.port, "127.0.0.1"));
    const stores = replicas.map((client) => new RedisLoadStore(client, { keyPrefix: prefix, lease: randomUUID(), sweepEveryMs: 0 }));
    const pools = ["p", "q", "r"];
    const outcomes = await Promise.all(
      Array.from({ length: 50 }, (_, id) => Promise.all(stores.map((store, i) => store.reserve({ id: `x${id}`, pool: pools[i]!, engine: ENGINES[0]!, promptTokens: 5 })))),
    );
    for (const perId of outcomes) expect(perId.filter((outcome) => outcome.kind === "reserved")).toHaveLength(1);
    expect(await stores[0]!.size()).toBe(50);
    for (let id = 0; id < 50; id++) expect(await stores[id % 3]!.release(`x${id}`, "ok")).toBe(true);
    for (const client of replicas) client.disconnect();
    const reader = new RedisLoadStore(redis, { keyPrefix: prefix, lease: "reader", sweepEveryMs: 0 });
    expect(await reader.size()).toBe(0);
    for (const pool of pools) for (const load of (await reader.poolLoads(pool)).values()) expect(load).toMatchObject({ requests: 0, prefillTokens: 0, tokensHeld: 0 });
  });

  it("a pick Redis answers after the timeout is released once Redis is back: nothing stays counted there", async () => {
    const client = connectRedis({ url: server.url, timeoutMs: 50 }, createLogger("silent"));
    if (client.status !== "ready") await new Promise((resolve) => client.once("ready", resolve));
    const shared = new RedisLoadStore(client, { keyPrefix: `t-${randomUUID()}:`, lease: randomUUID(), sweepEveryMs: 0 });
    const store = new FailOpenStore(shared, { timeoutMs: 50, coalesceMs: 100, retryMs: 100, onFallback: () => undefined });
    const pick = (id: string): PickRequest => pickOf(id, { promptTokens: 10 });
    // The pool known first, so that the late pick's script is the first thing sent.
    expect((await store.pickAndReserve(pick("warm"))).kind).toBe("reserved");
    await store.release("warm", "ok");
    const sleeper = new Redis(server.port, "127.0.0.1");
    const asleep = sleeper.call("DEBUG", "SLEEP", "0.3");
    await new Promise((resolve) => setTimeout(resolve, 20));
    // Late: picked from the local view; the script still runs in Redis once it wakes.
    expect((await store.pickAndReserve(pick("late"))).kind).toBe("reserved");
    expect(store.fallback).toBe(true);
    await store.release("late", "ok");
    await asleep;
    await expect.poll(() => store.fallback, { timeout: 5000 }).toBe(false);
    await expect.poll(() => shared.size(), { timeout: 5000 }).toBe(0);
    for (const load of (await shared.poolLoads("p")).values()) expect(load).toMatchObject({ requests: 0, prefillTokens: 0, tokensHeld: 0 });
    store.close();
    sleeper.disconnect();
    client.disconnect();
  });

  it("closes every reservation of dead leases in a sweep, and only theirs", async () => {
    const prefix = `t-${randomUUID()}:`;
    const dead = new RedisLoadStore(redis, { keyPrefix: prefix, lease: "dead", sweepEveryMs: 0 });
    const alive = new RedisLoadStore(redis, { keyPrefix: prefix, lease: "alive", sweepEveryMs: 0 });
    for (let i = 0; i < 30; i++) await dead.reserve({ id: `d${i}`, pool: i % 2 === 0 ? "p" : "q", engine: ENGINES[i % 3]!, promptTokens: 10 });
    await alive.reserve({ id: "a0", pool: "p", engine: ENGINES[0]!, promptTokens: 10 });
    expect(await alive.sweep(-1, ["dead"])).toEqual({ expired: [], reaped: 30 });
    expect(await alive.size()).toBe(1);
    expect(await alive.has("a0")).toBe(true);
    expect((await alive.loads(ENGINES)).get(ENGINES[0]!)?.requests).toBe(1);
  });

  // Last in this block: it restarts the server the others use.
  it("registers its pools again once Redis has restarted empty, through one ready listener however many stores share the client", async () => {
    const listeners = redis.listenerCount("ready");
    const stores = Array.from({ length: 20 }, () => storeOn());
    expect(redis.listenerCount("ready")).toBe(listeners);
    const store = stores[0]!;
    expect((await store.pickAndReserve(pickOf("before"))).kind).toBe("reserved");
    expect(await store.pools()).toEqual(["p"]);
    await server.kill();
    await expect.poll(() => redis.status, { timeout: 10_000 }).not.toBe("ready");
    await server.restart();
    await expect.poll(() => redis.status, { timeout: 10_000 }).toBe("ready");
    expect(await store.pools()).toEqual([]);
    expect((await store.pickAndReserve(pickOf("after"))).kind).toBe("reserved");
    expect(await store.pools()).toEqual(["p"]);
  });
});

describe.skipIf(redisMissing !== undefined)("RedisLoadStore on a 3-node Redis Cluster", () => {
  let cluster: Awaited<ReturnType<typeof startRedisCluster>>;
  let client: ReturnType<typeof connectRedis>;
  beforeAll(async () => {
    cluster = await startRedisCluster(3);
    client = connectRedis({ url: cluster.urls, timeoutMs: 1000 }, createLogger("silent"));
    // The client queues nothing while it connects (the sidecar fails open instead): wait for it.
    if (client.status !== "ready") await new Promise((resolve) => client.once("ready", resolve));
  }, 30_000);
  afterAll(async () => {
    client.disconnect();
    await cluster.stop();
  });

  it("keeps each pool's keys in one slot, pools on different nodes, and the ledger property holds", async () => {
    const prefix = `t-${randomUUID()}:`;
    const slots = await Promise.all(["p", "b"].map((pool) => Promise.all(["load", "res", "open"].map((key) => (client as Cluster).cluster("KEYSLOT", `${prefix}{${pool}}:${key}`)))));
    for (const perPool of slots) expect(new Set(perPool).size).toBe(1);
    // The node serving each pool's slot, from the Cluster's own slot map: two nodes, not only two slots.
    const ranges = await (client as Cluster).cluster("SLOTS");
    const servedBy = (slot: number) => ranges.find(([from, to]) => from <= slot && slot <= to)?.[2]?.[1];
    expect(servedBy(slots[0]![0]!)).toBeDefined();
    expect(servedBy(slots[0]![0]!)).not.toBe(servedBy(slots[1]![0]!));
    await checkLedger(async (clock) => ({ store: new RedisLoadStore(client, { keyPrefix: `t-${randomUUID()}:`, lease: randomUUID(), sweepEveryMs: 0, now: clock }), close: async () => undefined }), 10, 100);
  }, 120_000);
});
