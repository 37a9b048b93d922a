import {
  type EngineSnapshot,
  type LoadStore,
  type Outcome,
  type PickOutcome,
  type PickRequest,
  type ReportedUsage,
  type Reservation,
  type ReserveRequest,
  zeroLoad,
} from "./store.js";

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
  private readonly engines = new Map<string, EngineSnapshot>();
  /** pool → engine → open reservations, to list the engines a pool has traffic on. */
  private readonly poolEngines = new Map<string, Map<string, number>>();

  constructor(private readonly now: () => number = Date.now) {}

  pickAndReserve(request: PickRequest): PickOutcome {
    if (request.candidates.length === 0 || this.ledger.has(request.id)) return { kind: "none" };
    const limit = request.maxRequests;
    const remaining = limit > 0 ? request.candidates.filter((engine) => (this.engines.get(engine)?.requests ?? 0) < limit) : [...request.candidates];
    if (remaining.length === 0) return { kind: "saturated" };
    // The chosen engine first, then the next best by the same policy, each among those left.
    const ranked: string[] = [];
    const loads = remaining.map((engine) => this.engines.get(engine) ?? zeroLoad());
    while (ranked.length <= request.fallbacks && remaining.length > 0) {
      const chosen = request.choose(loads, remaining);
      const [engine] = remaining.splice(chosen, 1);
      loads.splice(chosen, 1);
      if (engine === undefined) break;
      ranked.push(engine);
    }
    const [engine, ...fallbacks] = ranked;
    if (engine === undefined) return { kind: "none" };
    this.open(request.id, request.pool, engine, request.promptTokens);
    return { kind: "reserved", reservation: { id: request.id, pool: request.pool, engine, promptTokens: request.promptTokens }, fallbacks };
  }

  reserve(request: ReserveRequest): boolean {
    if (this.ledger.has(request.id)) return false;
    this.open(request.id, request.pool, request.engine, request.promptTokens);
    return true;
  }

  has(id: string): boolean {
    return this.ledger.has(id);
  }

  firstToken(id: string): void {
    const entry = this.ledger.get(id);
    if (entry === undefined || !entry.inPrefill) return;
    const load = this.loadOf(entry.engine);
    entry.inPrefill = false;
    load.prefillRequests -= 1;
    load.prefillTokens -= entry.promptTokens;
  }

  addGenerated(id: string, tokens: number): void {
    const entry = this.ledger.get(id);
    if (entry === undefined || tokens <= 0) return;
    entry.generated += tokens;
    this.loadOf(entry.engine).tokensHeld += tokens;
  }

  reconcile(id: string, usage: ReportedUsage): void {
    const entry = this.ledger.get(id);
    if (entry === undefined) return;
    const load = this.loadOf(entry.engine);
    const promptDelta = usage.promptTokens - entry.promptTokens;
    const generatedDelta = usage.completionTokens - entry.generated;
    if (entry.inPrefill) load.prefillTokens += promptDelta;
    load.tokensHeld += promptDelta + generatedDelta;
    entry.promptTokens = usage.promptTokens;
    entry.generated = usage.completionTokens;
  }

  move(id: string, engine: string): boolean {
    const entry = this.ledger.get(id);
    if (entry === undefined) return false;
    if (entry.engine === engine) return true;
    this.unload(entry);
    entry.engine = engine;
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

  pools(): string[] {
    return [...this.poolEngines.keys()];
  }

  enginesOf(pool: string): string[] {
    return [...(this.poolEngines.get(pool)?.keys() ?? [])];
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
    for (const [engine, load] of this.engines) if (load.requests === 0 && load.updatedAt <= cutoff) this.engines.delete(engine);
    return expired;
  }

  size(): number {
    return this.ledger.size;
  }

  private open(id: string, pool: string, engine: string, promptTokens: number): void {
    const entry: LedgerEntry = { id, pool, engine, openedAt: this.now(), promptTokens, generated: 0, inPrefill: true };
    this.ledger.set(id, entry);
    this.load(entry);
  }

  /** Adds the entry's share to its engine's numbers. */
  private load(entry: LedgerEntry): void {
    const load = this.loadOf(entry.engine);
    load.requests += 1;
    load.tokensHeld += entry.promptTokens + entry.generated;
    if (entry.inPrefill) {
      load.prefillRequests += 1;
      load.prefillTokens += entry.promptTokens;
    }
    const perPool = this.poolEngines.get(entry.pool) ?? new Map<string, number>();
    perPool.set(entry.engine, (perPool.get(entry.engine) ?? 0) + 1);
    this.poolEngines.set(entry.pool, perPool);
  }

  /** Takes the entry's share off its engine's numbers: the exact inverse of `load`. */
  private unload(entry: LedgerEntry): void {
    const load = this.loadOf(entry.engine);
    load.requests -= 1;
    load.tokensHeld -= entry.promptTokens + entry.generated;
    if (entry.inPrefill) {
      load.prefillRequests -= 1;
      load.prefillTokens -= entry.promptTokens;
    }
    const perPool = this.poolEngines.get(entry.pool);
    if (perPool !== undefined) {
      const left = (perPool.get(entry.engine) ?? 1) - 1;
      if (left > 0) perPool.set(entry.engine, left);
      else perPool.delete(entry.engine);
      if (perPool.size === 0) this.poolEngines.delete(entry.pool);
    }
  }

  /** The engine's record, stamped as updated now: only called to change it. */
  private loadOf(engine: string): EngineSnapshot {
    let load = this.engines.get(engine);
    if (load === undefined) {
      load = { ...zeroLoad(), updatedAt: 0 };
      this.engines.set(engine, load);
    }
    load.updatedAt = this.now();
    return load;
  }
}
