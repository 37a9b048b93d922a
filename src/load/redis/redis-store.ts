import type { Cluster, Redis } from "ioredis";
import {
  addLoads,
  type EngineSnapshot,
  type LoadStore,
  type Outcome,
  type PickOutcome,
  type PickRequest,
  type ReportedUsage,
  type Reservation,
  type ReserveOutcome,
  type ReserveRequest,
  zeroLoad,
} from "../store.js";
import { ADD_GENERATED, COUNTERS_FORMAT, FIRST_TOKEN, MOVE, PICK, RECONCILE, RELEASE, RESERVE, SWEEP } from "./scripts.js";

const SCRIPTS = {
  mcPick: PICK,
  mcReserve: RESERVE,
  mcFirstToken: FIRST_TOKEN,
  mcAddGenerated: ADD_GENERATED,
  mcReconcile: RECONCILE,
  mcMove: MOVE,
  mcRelease: RELEASE,
  mcSweep: SWEEP,
} as const;

type ScriptName = keyof typeof SCRIPTS;
type Client = Redis | Cluster;
type ScriptCall = (...args: Array<string | number>) => Promise<unknown>;

/** Bytes of an engine's packed counters: one little-endian double per letter of the format after "<". */
const COUNTERS_BYTES = (COUNTERS_FORMAT.length - 1) * 8;

/** A token count as the store adds it: a non-negative integer; anything else counts 0. */
const countOf = (value: number): number => (Number.isFinite(value) && value > 0 ? Math.floor(value) : 0);

/**
 * How many times each client has become ready: a Redis that restarted empty has lost the pool set,
 * so what a store registered before the last ready counts no more. One listener per client, however
 * many stores share it (a listener per store would keep every store alive as long as the client).
 */
const readyCounts = new WeakMap<Client, { count: number }>();

function readinessOf(redis: Client): { count: number } {
  let counted = readyCounts.get(redis);
  if (counted === undefined) {
    const fresh = { count: 0 };
    redis.on("ready", () => (fresh.count += 1));
    readyCounts.set(redis, (counted = fresh));
  }
  return counted;
}

/** No unit weights: every live number's unit cost 0 (the script always takes four). */
const noUnitWeights = zeroLoad();

/** A pool's engines hash (engine → counters packed as COUNTERS_FORMAT) as snapshots by engine. */
export function snapshotsOf(fields: Record<string, Buffer>): Map<string, EngineSnapshot> {
  const engines = new Map<string, EngineSnapshot>();
  for (const [engine, packed] of Object.entries(fields)) {
    if (packed.length < COUNTERS_BYTES) continue;
    const [requests, prefillRequests, prefillTokens, tokensHeld, updatedAt] = [0, 1, 2, 3, 4].map((i) => packed.readDoubleLE(i * 8)) as [number, number, number, number, number];
    engines.set(engine, { requests, prefillRequests, prefillTokens, tokensHeld, updatedAt });
  }
  return engines;
}

/** One sweep's outcome: what expired by age, and how many reservations of dead sidecars were closed. */
export interface SweepResult {
  expired: Reservation[];
  reaped: number;
}

/**
 * The load numbers and ledger in Redis (or Valkey), shared by every replica: each operation one
 * script, atomic against every other replica's. Pools are the unit: a pool's keys share a hash
 * slot, and a pick weighs the load that pool's reservations put on each engine.
 */
export class RedisLoadStore implements LoadStore {
  /** The pool of each id this store opened or looked up, and whether the id index holds it. */
  private readonly poolOf = new Map<string, { pool: string; indexed: boolean }>();
  /** Pools this store has written to, registered in the shared pool set once (it is never pruned), since the client's ready number `registeredAt`. */
  private readonly registered = new Set<string>();
  private registeredAt = 0;
  private readonly readiness: { count: number };
  private readonly scripts: Record<ScriptName, ScriptCall>;

  private readonly prefix: string;
  /** The lease every reservation made here belongs to: unique across replicas and restarts. */
  readonly lease: string;
  private readonly sweepEveryMs: number;
  private readonly now: () => number;

  constructor(
    private readonly redis: Client,
    options: { keyPrefix: string; lease: string; sweepEveryMs: number; now?: () => number },
  ) {
    this.prefix = options.keyPrefix;
    this.lease = options.lease;
    this.sweepEveryMs = options.sweepEveryMs;
    this.now = options.now ?? Date.now;
    this.readiness = readinessOf(redis);
    this.registeredAt = this.readiness.count;
    // ioredis sends each by EVALSHA, loading it again if Redis lost it (a restart).
    for (const [name, lua] of Object.entries(SCRIPTS)) {
      if (!(name in redis)) redis.defineCommand(name, { numberOfKeys: 3, lua });
    }
    this.scripts = redis as unknown as Record<ScriptName, ScriptCall>;
  }

  private keys(pool: string): [string, string, string] {
    const tag = `${this.prefix}{${pool}}`;
    return [`${tag}:engines`, `${tag}:ledger`, `${tag}:open`];
  }

  private get poolSet(): string {
    return `${this.prefix}pools`;
  }

  /** id → pool for reservations opened by `reserve` (the HTTP API's adds, which any replica may delete). */
  private get idIndex(): string {
    return `${this.prefix}ids`;
  }

  private async register(pool: string): Promise<void> {
    // A Redis that restarted empty has lost the pool set: pools register again.
    if (this.registeredAt !== this.readiness.count) {
      this.registered.clear();
      this.registeredAt = this.readiness.count;
    }
    if (this.registered.has(pool)) return;
    await this.redis.sadd(this.poolSet, pool);
    this.registered.add(pool);
  }

  async pickAndReserve(request: PickRequest): Promise<PickOutcome> {
    if (this.poolOf.has(request.id) || (request.externalId === true && (await this.openElsewhere(request.id, request.pool)))) return { kind: "duplicate" };
    if (request.candidates.length === 0) return { kind: "none" };
    await this.register(request.pool);
    const { loadWeights: w, unitWeights: u = noUnitWeights } = request;
    const biased = request.bias.some((bias) => bias !== 0);
    const biases = biased ? request.candidates.map((_, index) => request.bias[index] ?? 0) : [];
    const prompt = countOf(request.promptTokens);
    const indexed = request.externalId === true;
    return this.opening(request.id, request.pool, indexed, async (): Promise<PickOutcome> => {
      const [kind, requests = 0, prefillRequests = 0, prefillTokens = 0, tokensHeld = 0, engine, ...fallbacks] = (await this.scripts.mcPick(
        ...this.keys(request.pool),
        request.id,
        this.now(),
        prompt,
        request.maxRequests,
        request.maxPrefillRequests ?? 0,
        request.fallbacks,
        request.tieBreak,
        w.requests,
        w.prefillRequests,
        w.prefillTokens,
        w.tokensHeld,
        u.requests,
        u.prefillRequests,
        u.prefillTokens,
        u.tokensHeld,
        this.lease,
        request.candidates.length,
        biased ? 1 : 0,
        ...request.candidates,
        ...biases,
      )) as [string, number?, number?, number?, number?, string?, ...string[]];
      if (kind === "saturated" || kind === "duplicate") return { kind };
      if (kind !== "reserved" || engine === undefined) return { kind: "none" };
      if (indexed && !(await this.index(request.id, request.pool))) return { kind: "duplicate" };
      const load = { requests, prefillRequests, prefillTokens, tokensHeld };
      return { kind: "reserved", reservation: { id: request.id, pool: request.pool, engine, promptTokens: prompt }, fallbacks, load };
    });
  }

  async reserve(request: ReserveRequest): Promise<ReserveOutcome> {
    if (await this.openElsewhere(request.id, request.pool)) return { kind: "duplicate" };
    await this.register(request.pool);
    const { maxRequests = -1, maxPrefillTokens = -1 } = request.bound ?? {};
    const { id, pool, engine } = request;
    return this.opening(id, pool, true, async (): Promise<ReserveOutcome> => {
      const reply = (await this.scripts.mcReserve(...this.keys(pool), id, this.now(), countOf(request.promptTokens), engine, this.lease, maxRequests, maxPrefillTokens)) as number[];
      const [opened, requests = 0, prefillRequests = 0, prefillTokens = 0, tokensHeld = 0, updatedAt = 0] = reply;
      if (opened === -1) return { kind: "over_bound", load: { requests, prefillRequests, prefillTokens, tokensHeld, updatedAt } };
      if (opened !== 1 || !(await this.index(id, pool))) return { kind: "duplicate" };
      return { kind: "reserved" };
    });
  }

  /**
   * Opens `id` by `open` (a script), the id's pool recorded before the script goes: should its
   * answer come after the caller gave up on it (a timeout), the reservation may have landed, and a
   * release must still find it. The record is dropped once the answer says nothing was opened.
   */
  private async opening<T extends { kind: string }>(id: string, pool: string, indexed: boolean, open: () => Promise<T>): Promise<T> {
    const mine = !this.poolOf.has(id);
    if (mine) this.poolOf.set(id, { pool, indexed });
    const outcome = await open();
    if (mine && outcome.kind !== "reserved") this.poolOf.delete(id);
    return outcome;
  }

  /**
   * True when a caller's id is open in a pool other than `pool`. A pool's script sees only that
   * pool's ids, and a caller may reuse its request_id across clusters: that is a duplicate too.
   */
  private async openElsewhere(id: string, pool: string): Promise<boolean> {
    const other = await this.redis.hget(this.idIndex, id);
    return other !== null && other !== pool && (await this.redis.hexists(this.keys(other)[1], id)) === 1;
  }

  /**
   * Enters a reservation just opened in `pool` in the id index, so any replica can find it. When
   * another replica opened the same id in another pool meanwhile, the one opened here is closed
   * again and false returned. An entry whose reservation is no longer open (its owner failed
   * between the steps) is taken over.
   */
  private async index(id: string, pool: string): Promise<boolean> {
    if ((await this.redis.hsetnx(this.idIndex, id, pool)) === 1) return true;
    const other = await this.redis.hget(this.idIndex, id);
    if (other === pool) return true;
    if (other !== null && (await this.redis.hexists(this.keys(other)[1], id)) === 1) {
      await this.scripts.mcRelease(...this.keys(pool), id, this.now());
      return false;
    }
    await this.redis.hset(this.idIndex, id, pool);
    return true;
  }

  /** Where an open id is: known here, or from the index of reservations made by `reserve` anywhere. */
  private async find(id: string): Promise<{ pool: string; indexed: boolean } | undefined> {
    const known = this.poolOf.get(id);
    if (known !== undefined) return known;
    const pool = await this.redis.hget(this.idIndex, id);
    return pool === null ? undefined : { pool, indexed: true };
  }

  private async onOpen(id: string, script: ScriptName, ...args: Array<string | number>): Promise<boolean> {
    const found = await this.find(id);
    if (found === undefined) return false;
    return (await this.scripts[script](...this.keys(found.pool), id, this.now(), ...args)) === 1;
  }

  async has(id: string): Promise<boolean> {
    const found = await this.find(id);
    if (found === undefined) return false;
    return (await this.redis.hexists(this.keys(found.pool)[1], id)) === 1;
  }

  async firstToken(id: string): Promise<void> {
    await this.onOpen(id, "mcFirstToken");
  }

  addGenerated(id: string, tokens: number): Promise<void> {
    return this.addGeneratedMany([[id, tokens]]);
  }

  /** Many reservations' generated tokens at once: one script per pool. */
  async addGeneratedMany(batch: ReadonlyArray<readonly [string, number]>): Promise<void> {
    const byPool = new Map<string, Array<string | number>>();
    const found = await Promise.all(batch.map(([id, tokens]) => (countOf(tokens) > 0 ? this.find(id) : undefined)));
    for (const [index, [id, tokens]] of batch.entries()) {
      const pool = found[index]?.pool;
      if (pool === undefined) continue;
      let args = byPool.get(pool);
      if (args === undefined) byPool.set(pool, (args = []));
      args.push(id, countOf(tokens));
    }
    await Promise.all([...byPool].map(([pool, args]) => this.scripts.mcAddGenerated(...this.keys(pool), this.now(), ...args)));
  }

  async reconcile(id: string, usage: ReportedUsage): Promise<void> {
    const counts = Number.isSafeInteger(usage.promptTokens) && usage.promptTokens >= 0 && Number.isSafeInteger(usage.completionTokens) && usage.completionTokens >= 0;
    if (counts) await this.onOpen(id, "mcReconcile", usage.promptTokens, usage.completionTokens);
  }

  move(id: string, engine: string): Promise<boolean> {
    return this.onOpen(id, "mcMove", engine);
  }

  async release(id: string, _outcome: Outcome): Promise<boolean> {
    const found = await this.find(id);
    if (found === undefined) return false;
    const released = (await this.scripts.mcRelease(...this.keys(found.pool), id, this.now())) === 1;
    this.poolOf.delete(id);
    if (found.indexed) await this.redis.hdel(this.idIndex, id);
    return released;
  }

  async loads(engines: readonly string[]): Promise<Map<string, EngineSnapshot>> {
    const result = new Map<string, EngineSnapshot>(engines.map((engine) => [engine, { ...zeroLoad(), updatedAt: 0 }]));
    for (const pool of await this.pools()) addLoads(result, await this.poolLoads(pool));
    return result;
  }

  async poolLoads(pool: string): Promise<Map<string, EngineSnapshot>> {
    return snapshotsOf(await this.redis.hgetallBuffer(this.keys(pool)[0]));
  }

  async pools(): Promise<string[]> {
    const pools = await this.redis.smembers(this.poolSet);
    const counted = await Promise.all(pools.map(async (pool) => ((await this.redis.hlen(this.keys(pool)[0])) > 0 ? [pool] : [])));
    return counted.flat().sort();
  }

  ping(): Promise<unknown> {
    return this.redis.ping();
  }

  /** True for the one replica that takes `task` now; nobody else gets it for `ms`. */
  async claim(task: string, ms: number): Promise<boolean> {
    return (await this.redis.set(`${this.prefix}claim:${task}`, this.lease, "PX", ms, "NX")) === "OK";
  }

  /** The TTL sweep, run by one replica per sweep interval (the others return 0); sweepEveryMs 0: by every caller. */
  async expire(olderThanMs: number, onExpired?: (reservation: Reservation) => void): Promise<number> {
    if (this.sweepEveryMs > 0 && !(await this.claim("sweep", Math.max(1, this.sweepEveryMs - 100)))) return 0;
    const { expired } = await this.sweep(this.now() - olderThanMs, []);
    for (const reservation of expired) onExpired?.(reservation);
    return expired.length;
  }

  /**
   * Over every pool: closes what was opened at or before `cutoff` (-1: nothing) and every
   * reservation of the dead leases, and forgets engines idle since the cutoff.
   */
  async sweep(cutoff: number, deadLeases: readonly string[]): Promise<SweepResult> {
    const result: SweepResult = { expired: [], reaped: 0 };
    for (const pool of await this.redis.smembers(this.poolSet)) {
      const reply = (await this.scripts.mcSweep(...this.keys(pool), cutoff, this.now(), ...deadLeases)) as string[];
      const closed = reply.map((raw) => JSON.parse(raw) as { id: string; engine: string; prompt: number; reaped: boolean });
      for (const { id, engine, prompt, reaped } of closed) {
        if (reaped) result.reaped += 1;
        else result.expired.push({ id, pool, engine, promptTokens: prompt });
        this.poolOf.delete(id);
      }
      if (closed.length > 0) await this.redis.hdel(this.idIndex, ...closed.map(({ id }) => id));
    }
    return result;
  }

  async size(): Promise<number> {
    const pools = await this.redis.smembers(this.poolSet);
    const sizes = await Promise.all(pools.map((pool) => this.redis.hlen(this.keys(pool)[1])));
    return sizes.reduce((sum, size) => sum + size, 0);
  }
}
