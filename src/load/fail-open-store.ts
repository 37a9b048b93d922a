import { MemoryLoadStore } from "./memory-store.js";
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
} from "./store.js";

/** The shared store as the fail-open wrapper needs it: a LoadStore that can be pinged and take many token updates at once. */
export interface SharedStore extends LoadStore {
  ping(): Promise<unknown>;
  addGeneratedMany(batch: ReadonlyArray<readonly [string, number]>): Promise<void>;
}

/** What an exchange has to tell the shared store beyond its pick, first token and release. */
interface PendingUpdate {
  readonly slot: number;
  /** Generated tokens counted since the last update sent (or since `usage`). */
  tokens: number;
  /** The engine's own latest numbers, if it reported any since. */
  usage: ReportedUsage | undefined;
}

/** Open exchanges are spread over this many flush slots, one flushed per coalesceMs / SLOTS: the writes come evenly, not in one burst that picks queue behind. */
const FLUSH_SLOTS = 10;

export interface FailOpenSettings {
  /** Longest any call waits on the shared store. */
  timeoutMs: number;
  /** Generated tokens and reported usage of one exchange reach the shared store at most this often. */
  coalesceMs: number;
  /** While the shared store is out, it is tried again this often. */
  retryMs: number;
  /** Called on each transition: true when picks move to the local view, false when they are back. */
  onFallback(local: boolean, reason: string | undefined): void;
}

/** Releases of shared reservations that failed, kept for when the shared store is back; past this they are left to its TTL. */
const MAX_PENDING_RELEASES = 100_000;

class TimedOut extends Error {
  constructor(ms: number) {
    super(`no answer within ${ms} ms`);
  }
}

function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimedOut(ms)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/**
 * Fail open, never block: every call to the shared store (Redis) is bounded by `timeoutMs`. When
 * it fails or is late, picks come at once from a local store holding only this sidecar's own
 * reservations, until a ping answers again; a reservation is released where it was made, so
 * nothing is counted twice. Generated tokens and reported usage are coalesced per exchange (never
 * a round trip per SSE event). Never throws for the shared store's sake: an outage must not fail an exchange.
 */
export class FailOpenStore implements LoadStore {
  private readonly local: MemoryLoadStore;
  private down: string | undefined;
  private retry: NodeJS.Timeout | undefined;
  /** Ids reserved in the local store. */
  private readonly localIds = new Set<string>();
  /** Shared ids whose release did not get through (or whose pick timed out and may have landed). */
  private readonly pendingReleases = new Map<string, Outcome>();
  /** Updates not yet sent, by id, in the flush slot each id was first given. */
  private readonly pending = new Map<string, PendingUpdate>();
  private readonly slots: Array<Set<string>> = Array.from({ length: FLUSH_SLOTS }, () => new Set());
  private nextSlot = 0;
  private flushing = 0;
  private readonly flusher: NodeJS.Timeout;

  constructor(
    private readonly shared: SharedStore,
    private readonly settings: FailOpenSettings,
    now: () => number = Date.now,
  ) {
    this.local = new MemoryLoadStore(now);
    this.flusher = setInterval(() => this.flushPending(), settings.coalesceMs / FLUSH_SLOTS);
    this.flusher.unref();
  }

  /** True while picks come from the local view. */
  get fallback(): boolean {
    return this.down !== undefined;
  }

  close(): void {
    clearInterval(this.flusher);
    clearTimeout(this.retry);
  }

  private fail(error: unknown): void {
    if (this.down !== undefined) return;
    this.down = error instanceof Error ? error.message : String(error);
    this.settings.onFallback(true, this.down);
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    this.retry = setTimeout(() => void this.tryShared(), this.settings.retryMs);
    this.retry.unref();
  }

  private async tryShared(): Promise<void> {
    try {
      await within(this.shared.ping(), this.settings.timeoutMs);
    } catch {
      this.scheduleRetry();
      return;
    }
    this.down = undefined;
    this.settings.onFallback(false, undefined);
    for (const [id, outcome] of [...this.pendingReleases]) {
      this.pendingReleases.delete(id);
      void this.releaseShared(id, outcome);
    }
  }

  /** The shared store's answer, or undefined once it failed or was late (and the store is then marked down). */
  private async call<T>(operation: () => Promise<T> | T): Promise<T | undefined> {
    if (this.down !== undefined) return undefined;
    try {
      return await within(Promise.resolve().then(operation), this.settings.timeoutMs);
    } catch (error) {
      this.fail(error);
      return undefined;
    }
  }

  pickAndReserve(request: PickRequest): Promise<PickOutcome> {
    return this.open(
      request.id,
      () => this.shared.pickAndReserve(request),
      () => this.local.pickAndReserve(request),
      (outcome) => outcome.kind === "reserved",
    );
  }

  /** While the shared store is out, a bound holds against this sidecar's own reservations only. */
  reserve(request: ReserveRequest): Promise<ReserveOutcome> {
    return this.open(
      request.id,
      () => this.shared.reserve(request),
      () => this.local.reserve(request),
      (outcome) => outcome.kind === "reserved",
    );
  }

  /** Opens a reservation in the shared store, or, when that fails or is late, in the local one. */
  private async open<T>(id: string, shared: () => Promise<T> | T, local: () => T, opened: (result: T) => boolean): Promise<T> {
    const tried = this.down === undefined;
    const answer = await this.call(shared);
    if (answer !== undefined) return answer;
    // A call that failed late may still land in the shared store: released there once it answers.
    if (tried) this.pendingRelease(id, "internal_error");
    const result = local();
    if (opened(result)) this.localIds.add(id);
    return result;
  }

  async has(id: string): Promise<boolean> {
    if (this.localIds.has(id)) return true;
    return (await this.call(() => this.shared.has(id))) ?? false;
  }

  async firstToken(id: string): Promise<void> {
    if (this.localIds.has(id)) return this.local.firstToken(id);
    await this.call(() => this.shared.firstToken(id));
  }

  async addGenerated(id: string, tokens: number): Promise<void> {
    if (this.localIds.has(id)) return this.local.addGenerated(id, tokens);
    if (!(tokens > 0)) return;
    this.pendingFor(id).tokens += tokens;
  }

  /**
   * Coalesced as generated tokens are: the engine's numbers replace the counted ones, so only the
   * latest matters, and one that the release overtakes (usage comes last, just before the end;
   * or in every chunk, with vLLM's continuous usage stats) is never sent at all.
   */
  async reconcile(id: string, usage: ReportedUsage): Promise<void> {
    if (this.localIds.has(id)) return this.local.reconcile(id, usage);
    const pending = this.pendingFor(id);
    // Tokens counted before the engine's numbers are part of them.
    pending.tokens = 0;
    pending.usage = usage;
  }

  /** The id's updates not sent yet; a new id takes the next flush slot. */
  private pendingFor(id: string): PendingUpdate {
    let pending = this.pending.get(id);
    if (pending === undefined) {
      pending = { slot: (this.nextSlot = (this.nextSlot + 1) % FLUSH_SLOTS), tokens: 0, usage: undefined };
      this.pending.set(id, pending);
      this.slots[pending.slot]!.add(id);
    }
    return pending;
  }

  /** One slot's exchanges: each sent at most once per coalesceMs; the engine's numbers first, then the tokens counted since, many per call. */
  private flushPending(): void {
    const slot = this.slots[(this.flushing = (this.flushing + 1) % FLUSH_SLOTS)]!;
    if (slot.size === 0 || this.down !== undefined) return;
    const usages: Array<[string, ReportedUsage]> = [];
    const generated: Array<[string, number]> = [];
    for (const id of slot) {
      const pending = this.pending.get(id);
      this.pending.delete(id);
      if (pending?.usage !== undefined) usages.push([id, pending.usage]);
      if (pending !== undefined && pending.tokens > 0) generated.push([id, pending.tokens]);
    }
    slot.clear();
    void this.call(async () => {
      await Promise.all(usages.map(([id, usage]) => this.shared.reconcile(id, usage)));
      if (generated.length > 0) await this.shared.addGeneratedMany(generated);
    });
  }

  /** What `id` has not sent yet is dropped: a release makes it moot. */
  private dropPending(id: string): void {
    const pending = this.pending.get(id);
    if (pending === undefined) return;
    this.pending.delete(id);
    this.slots[pending.slot]!.delete(id);
  }

  async move(id: string, engine: string): Promise<boolean> {
    if (this.localIds.has(id)) return this.local.move(id, engine);
    return (await this.call(() => this.shared.move(id, engine))) ?? false;
  }

  async release(id: string, outcome: Outcome): Promise<boolean> {
    if (this.localIds.delete(id)) return this.local.release(id, outcome);
    this.dropPending(id);
    this.pendingReleases.delete(id);
    return this.releaseShared(id, outcome);
  }

  private async releaseShared(id: string, outcome: Outcome): Promise<boolean> {
    const released = await this.call(() => this.shared.release(id, outcome));
    if (released === undefined) this.pendingRelease(id, outcome);
    return released ?? true;
  }

  private pendingRelease(id: string, outcome: Outcome): void {
    if (this.pendingReleases.size < MAX_PENDING_RELEASES) this.pendingReleases.set(id, outcome);
  }

  /** The shared view plus what this sidecar reserved locally while the shared store was out. */
  async loads(engines: readonly string[]): Promise<Map<string, EngineSnapshot>> {
    return addLoads(new Map((await this.call(() => this.shared.loads(engines))) ?? []), this.local.loads(engines));
  }

  async poolLoads(pool: string): Promise<Map<string, EngineSnapshot>> {
    return addLoads(new Map((await this.call(() => this.shared.poolLoads(pool))) ?? []), this.local.poolLoads(pool));
  }

  async pools(): Promise<string[]> {
    const shared = (await this.call(() => this.shared.pools())) ?? [];
    return [...new Set([...shared, ...this.local.pools()])].sort();
  }

  async expire(olderThanMs: number, onExpired?: (reservation: Reservation) => void): Promise<number> {
    const local = this.local.expire(olderThanMs, (reservation) => {
      this.localIds.delete(reservation.id);
      onExpired?.(reservation);
    });
    return local + ((await this.call(() => this.shared.expire(olderThanMs, onExpired))) ?? 0);
  }

  async size(): Promise<number> {
    return this.local.size() + ((await this.call(() => this.shared.size())) ?? 0);
  }
}
