import {
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
} from "./store.js";
import { rankByLoad } from "./ranking.js";

/** A token count as the store adds it: a non-negative integer; anything else (NaN, infinite, negative) counts 0. */
const countOf = (value: number): number => (Number.isFinite(value) && value > 0 ? Math.floor(value) : 0);

interface LedgerEntry {
  readonly id: string;
  readonly pool: string;
  engine: string;
  readonly openedAt: number;
  promptTokens: number;
  generated: number;
  inPrefill: boolean;
}

/**
 * The embedded store: one process, one event loop. Every operation completes synchronously,
 * so a pick and its reservation can never interleave with another pick.
 */
export class MemoryLoadStore implements LoadStore {
  private readonly ledger = new Map<string, LedgerEntry>();
  /** Each engine's load over every pool: what picks weigh. */
  private readonly engines = new Map<string, EngineSnapshot>();
  /** pool → engine → the load that pool's reservations put on it (the Go service's per-cluster counters). */
  private readonly byPool = new Map<string, Map<string, EngineSnapshot>>();

  constructor(private readonly now: () => number = Date.now) {}

  pickAndReserve(request: PickRequest): PickOutcome {
    if (this.ledger.has(request.id)) return { kind: "duplicate" };
    if (request.candidates.length === 0) return { kind: "none" };
    const limit = request.maxRequests;
    const prefillLimit = request.maxPrefillRequests ?? 0;
    const full = (load: EngineSnapshot | undefined): boolean =>
      load !== undefined && ((limit > 0 && load.requests >= limit) || (prefillLimit > 0 && load.prefillRequests >= prefillLimit));
    const eligible = request.candidates.flatMap((engine, index) => (full(this.engines.get(engine)) ? [] : [{ engine, bias: request.bias[index] ?? 0 }]));
    if (eligible.length === 0) return { kind: "saturated" };
    // The chosen engine first, then the next best by the same policy, each among those left.
    const ranked = rankByLoad(
      eligible.map(({ engine }) => this.engines.get(engine) ?? zeroLoad()),
      eligible.map(({ bias }) => bias),
      request.loadWeights,
      request.unitWeights,
      request.tieBreak,
      request.fallbacks + 1,
    ).flatMap((index) => eligible[index]?.engine ?? []);
    const [engine, ...fallbacks] = ranked;
    if (engine === undefined) return { kind: "none" };
    const { requests, prefillRequests, prefillTokens, tokensHeld } = this.engines.get(engine) ?? zeroLoad();
    const entry = this.open(request.id, request.pool, engine, request.promptTokens);
    const load = { requests, prefillRequests, prefillTokens, tokensHeld };
    return { kind: "reserved", reservation: { id: request.id, pool: request.pool, engine, promptTokens: entry.promptTokens }, fallbacks, load };
  }

  reserve(request: ReserveRequest): ReserveOutcome {
    if (this.ledger.has(request.id)) return { kind: "duplicate" };
    const { bound } = request;
    if (bound !== undefined) {
      const load = this.byPool.get(request.pool)?.get(request.engine) ?? { ...zeroLoad(), updatedAt: 0 };
      const over =
        (bound.maxRequests !== undefined && load.requests + 1 > bound.maxRequests) ||
        (bound.maxPrefillTokens !== undefined && load.prefillTokens + countOf(request.promptTokens) > bound.maxPrefillTokens);
      if (over) return { kind: "over_bound", load: { ...load } };
    }
    this.open(request.id, request.pool, request.engine, request.promptTokens);
    return { kind: "reserved" };
  }

  has(id: string): boolean {
    return this.ledger.has(id);
  }

  firstToken(id: string): void {
    const entry = this.ledger.get(id);
    if (entry === undefined || !entry.inPrefill) return;
    entry.inPrefill = false;
    for (const load of this.recordsOf(entry)) {
      load.prefillRequests -= 1;
      load.prefillTokens -= entry.promptTokens;
    }
  }

  addGenerated(id: string, tokens: number): void {
    const entry = this.ledger.get(id);
    if (entry === undefined) return;
    const added = Math.min(countOf(tokens), this.room(entry.engine));
    if (added === 0) return;
    entry.generated += added;
    for (const load of this.recordsOf(entry)) load.tokensHeld += added;
  }

  reconcile(id: string, usage: ReportedUsage): void {
    const entry = this.ledger.get(id);
    if (entry === undefined) return;
    const promptDelta = usage.promptTokens - entry.promptTokens;
    const generatedDelta = usage.completionTokens - entry.generated;
    // Numbers that are not counts, or that would push a sum past exact integers, are not taken.
    const counts = Number.isSafeInteger(usage.promptTokens) && usage.promptTokens >= 0 && Number.isSafeInteger(usage.completionTokens) && usage.completionTokens >= 0;
    if (!counts || promptDelta + generatedDelta > this.room(entry.engine)) return;
    for (const load of this.recordsOf(entry)) {
      if (entry.inPrefill) load.prefillTokens += promptDelta;
      load.tokensHeld += promptDelta + generatedDelta;
    }
    entry.promptTokens = usage.promptTokens;
    entry.generated = usage.completionTokens;
  }

  move(id: string, engine: string): boolean {
    const entry = this.ledger.get(id);
    if (entry === undefined) return false;
    if (entry.engine === engine) return true;
    this.unload(entry);
    entry.engine = engine;
    // What the new engine's sums have no room for is not carried (only near 2^53 tokens).
    entry.generated = Math.min(entry.generated, this.room(engine));
    entry.promptTokens = Math.min(entry.promptTokens, this.room(engine) - entry.generated);
    this.load(entry);
    return true;
  }

  release(id: string, _outcome: Outcome): boolean {
    const entry = this.ledger.get(id);
    if (entry === undefined) return false;
    this.ledger.delete(id);
    this.unload(entry);
    return true;
  }

  loads(engines: readonly string[]): Map<string, EngineSnapshot> {
    const result = new Map<string, EngineSnapshot>();
    for (const engine of engines) result.set(engine, { ...(this.engines.get(engine) ?? { ...zeroLoad(), updatedAt: 0 }) });
    for (const [engine, load] of this.engines) if (!result.has(engine)) result.set(engine, { ...load });
    return result;
  }

  poolLoads(pool: string): Map<string, EngineSnapshot> {
    return new Map([...(this.byPool.get(pool) ?? [])].map(([engine, load]) => [engine, { ...load }]));
  }

  pools(): string[] {
    return [...this.byPool.keys()];
  }

  expire(olderThanMs: number, onExpired?: (reservation: Reservation) => void): number {
    const cutoff = this.now() - olderThanMs;
    let expired = 0;
    for (const entry of this.ledger.values()) {
      if (entry.openedAt > cutoff) continue;
      this.release(entry.id, "expired");
      onExpired?.({ id: entry.id, pool: entry.pool, engine: entry.engine, promptTokens: entry.promptTokens });
      expired += 1;
    }
    const idle = (load: EngineSnapshot): boolean => load.requests === 0 && load.updatedAt <= cutoff;
    for (const [engine, load] of this.engines) if (idle(load)) this.engines.delete(engine);
    for (const [pool, engines] of this.byPool) {
      for (const [engine, load] of engines) if (idle(load)) engines.delete(engine);
      if (engines.size === 0) this.byPool.delete(pool);
    }
    return expired;
  }

  size(): number {
    return this.ledger.size;
  }

  private open(id: string, pool: string, engine: string, promptTokens: number): LedgerEntry {
    const counted = Math.min(countOf(promptTokens), this.room(engine));
    const entry: LedgerEntry = { id, pool, engine, openedAt: this.now(), promptTokens: counted, generated: 0, inPrefill: true };
    this.ledger.set(id, entry);
    this.load(entry);
    return entry;
  }

  /**
   * Tokens the engine can take on while every sum stays an exact integer in float64. Its
   * engine-wide tokensHeld is the largest sum it is part of (a pool's share and prefill tokens
   * are parts of it), so nothing is ever rounded and each release takes off exactly what was added.
   */
  private room(engine: string): number {
    return Number.MAX_SAFE_INTEGER - (this.engines.get(engine)?.tokensHeld ?? 0);
  }

  /** Adds the entry's share to its engine's numbers. */
  private load(entry: LedgerEntry): void {
    this.shift(entry, 1);
  }

  /** Takes the entry's share off its engine's numbers: the exact inverse of `load`. */
  private unload(entry: LedgerEntry): void {
    this.shift(entry, -1);
  }

  private shift(entry: LedgerEntry, sign: 1 | -1): void {
    for (const load of this.recordsOf(entry)) {
      load.requests += sign;
      load.tokensHeld += sign * (entry.promptTokens + entry.generated);
      if (entry.inPrefill) {
        load.prefillRequests += sign;
        load.prefillTokens += sign * entry.promptTokens;
      }
    }
  }

  /** The entry's engine record and its pool's record of that engine, stamped as updated now: only called to change them. */
  private recordsOf(entry: LedgerEntry): [EngineSnapshot, EngineSnapshot] {
    let engines = this.byPool.get(entry.pool);
    if (engines === undefined) {
      engines = new Map();
      this.byPool.set(entry.pool, engines);
    }
    return [this.stamped(this.engines, entry.engine), this.stamped(engines, entry.engine)];
  }

  private stamped(records: Map<string, EngineSnapshot>, engine: string): EngineSnapshot {
    let load = records.get(engine);
    if (load === undefined) {
      load = { ...zeroLoad(), updatedAt: 0 };
      records.set(engine, load);
    }
    load.updatedAt = this.now();
    return load;
  }
}
