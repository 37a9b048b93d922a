import { andThen, type Awaitable } from "../load/store.js";
import type { PickResult } from "./picker.js";
import type { SchedulingRequest } from "./plan.js";

/** `scheduling.queue`: what the sidecar may hold while every engine of a pool is at its limit. */
export interface QueueSettings {
  /** Requests held at once over every pool; 0 = no queue, a saturated pool answers 429 at once. */
  maxRequests: number;
  /** Request body bytes held at once. */
  maxBytes: number;
  /** Longest a request is held; then 429. */
  maxWaitMs: number;
  /** A held request's prompt counts half as long for each agingMs it has waited. */
  agingMs: number;
  /** How often held requests try again when no release was seen here (another replica's frees an engine too). */
  retryMs: number;
  /** The request header carrying an integer priority, when the gateway sets one (and strips the client's). */
  priorityHeader?: string | undefined;
  /** Priority by model, for requests without a usable header; 0 otherwise. */
  priorities: Readonly<Record<string, number>>;
}

/** What picks the engine: the Picker, or anything with its shape. */
export interface PickSource {
  pick(request: SchedulingRequest): Awaitable<PickResult>;
  /** The pool a model's requests go to, undefined when none serves it. */
  poolFor(model: string | undefined): string | undefined;
  readonly usesPrefix: boolean;
}

/** A request as the queue holds it. */
export interface QueueRequest extends SchedulingRequest {
  /** The priority header's value, if the request has one. */
  priorityHint: string | undefined;
  /** What holding it costs: its body's bytes. */
  bytes: number;
  /** Aborted when the exchange ends: a held request is dropped then. */
  signal?: AbortSignal | undefined;
}

/** What an exchange picks through: the queue, or a Picker alone. */
export interface Scheduler {
  /** Synchronous when nothing is held and the store answers at once: the routing reply then goes before any other work. */
  pick(request: QueueRequest): Awaitable<QueuedPickResult>;
  readonly usesPrefix: boolean;
  /** The header a request's priority is read from, if any. */
  readonly priorityHeader?: string | undefined;
}

export type QueuedPickResult =
  | PickResult
  | { kind: "queue_full"; pool: string }
  | { kind: "queue_timeout"; pool: string; waitedMs: number }
  /** The exchange ended while its request was held. */
  | { kind: "abandoned" };

/** Told how many requests are held per pool and how long each one waited (metrics), and of a defect in dispatching (logged). */
export interface QueueEvents {
  held(pool: string, count: number): void;
  waited(seconds: number): void;
  failed(error: unknown): void;
}

interface Held {
  readonly request: QueueRequest;
  readonly priority: number;
  readonly pool: string;
  readonly since: number;
  /** waiting: in the queue; trying: its pick is under way; done: answered. */
  state: "waiting" | "trying" | "done";
  /** Set when the wait ran out or the exchange ended while its pick was under way. */
  expired: "timeout" | "abandoned" | undefined;
  readonly answer: (result: QueuedPickResult) => void;
  readonly fail: (error: unknown) => void;
  timer: NodeJS.Timeout | undefined;
  onAbort: (() => void) | undefined;
}

/**
 * Holds requests a saturated pool cannot take and dispatches them as engines free up: highest
 * priority first, within a priority the shortest prompt (aged, so a long prompt that has waited
 * overtakes fresh short ones). While a pool has requests held, new ones join the queue instead of
 * taking a freed engine before them. Bounded in requests, bytes and time; 429 beyond.
 */
export class PickQueue implements Scheduler {
  private readonly byPool = new Map<string, Held[]>();
  private count = 0;
  private bytes = 0;
  /** Pools whose dispatch is running, and those asked to run again when it is done. */
  private readonly dispatching = new Set<string>();
  private readonly again = new Set<string>();
  private retry: NodeJS.Timeout | undefined;
  /** Shutting down: nothing more is held. */
  private closed = false;

  constructor(
    private source: () => PickSource,
    private settings: QueueSettings,
    private readonly events: QueueEvents,
    private readonly now: () => number = () => performance.now(),
  ) {}

  get usesPrefix(): boolean {
    return this.source().usesPrefix;
  }

  /** New bounds from a reloaded config; requests already held keep their place. */
  configure(settings: QueueSettings): void {
    this.settings = settings;
  }

  /** The header a request's priority is read from, if any. */
  get priorityHeader(): string | undefined {
    return this.settings.priorityHeader;
  }

  pick(request: QueueRequest): Awaitable<QueuedPickResult> {
    const pool = this.byPool.size > 0 ? this.source().poolFor(request.model) : undefined;
    if (pool !== undefined && this.byPool.has(pool)) return this.hold(pool, request);
    return andThen(this.source().pick(request), (result) => (result.kind !== "saturated" || this.settings.maxRequests === 0 ? result : this.hold(result.pool, request)));
  }

  /** An engine may have freed (a release here): held requests try again now. */
  wake(): void {
    for (const pool of this.byPool.keys()) this.kick(pool);
  }

  /** Answers every held request 429 (shutdown); nothing is reserved for them. */
  close(): void {
    this.closed = true;
    for (const held of this.byPool.values()) for (const entry of [...held]) this.expire(entry, "timeout");
  }

  /** Dispatch runs on its own; whatever escapes it is a defect, logged, never the process's end. */
  private kick(pool: string): void {
    this.dispatch(pool).catch((error: unknown) => this.events.failed(error));
  }

  private hold(pool: string, request: QueueRequest): Promise<QueuedPickResult> {
    if (request.signal?.aborted === true) return Promise.resolve({ kind: "abandoned" });
    if (this.closed) return Promise.resolve({ kind: "queue_timeout", pool, waitedMs: 0 });
    if (this.count >= this.settings.maxRequests || this.bytes + request.bytes > this.settings.maxBytes) {
      return Promise.resolve({ kind: "queue_full", pool });
    }
    return new Promise((answer, fail) => {
      const priority = this.priorityOf(request);
      const entry: Held = { request, priority, pool, since: this.now(), state: "waiting", expired: undefined, answer, fail, timer: undefined, onAbort: undefined };
      entry.timer = setTimeout(() => this.expire(entry, "timeout"), this.settings.maxWaitMs);
      entry.onAbort = () => this.expire(entry, "abandoned");
      request.signal?.addEventListener("abort", entry.onAbort, { once: true });
      let held = this.byPool.get(pool);
      if (held === undefined) this.byPool.set(pool, (held = []));
      held.push(entry);
      this.count += 1;
      this.bytes += request.bytes;
      this.events.held(pool, held.length);
      this.retry ??= setInterval(() => this.wake(), this.settings.retryMs);
      this.retry.unref();
      this.kick(pool);
    });
  }

  /** The header's integer when it carries one, else the model's configured priority. */
  private priorityOf(request: QueueRequest): number {
    const hint = request.priorityHint?.trim();
    if (hint !== undefined && /^[+-]?\d{1,9}$/.test(hint)) return Number(hint);
    return this.settings.priorities[request.model ?? ""] ?? 0;
  }

  private expire(entry: Held, why: "timeout" | "abandoned"): void {
    if (entry.state === "trying") entry.expired = why;
    else if (entry.state === "waiting") this.finish(entry, this.expiredAnswer(entry, why));
  }

  private expiredAnswer(entry: Held, why: "timeout" | "abandoned"): QueuedPickResult {
    return why === "abandoned" ? { kind: "abandoned" } : { kind: "queue_timeout", pool: entry.pool, waitedMs: this.now() - entry.since };
  }

  /** Out of the queue, answered once (or failed with the error its pick raised). */
  private finish(entry: Held, result: QueuedPickResult | { kind: "failed"; error: unknown }): void {
    if (entry.state === "done") return;
    entry.state = "done";
    clearTimeout(entry.timer);
    if (entry.onAbort !== undefined) entry.request.signal?.removeEventListener("abort", entry.onAbort);
    const held = this.byPool.get(entry.pool) ?? [];
    const at = held.indexOf(entry);
    if (at >= 0) held.splice(at, 1);
    this.count -= 1;
    this.bytes -= entry.request.bytes;
    this.events.held(entry.pool, held.length);
    this.events.waited((this.now() - entry.since) / 1000);
    if (held.length === 0) this.byPool.delete(entry.pool);
    if (this.count === 0) {
      clearInterval(this.retry);
      this.retry = undefined;
    }
    if (result.kind === "failed") entry.fail(result.error);
    else entry.answer(result);
  }

  /** One dispatch per pool at a time: the best held request picks until the pool is full again. */
  private async dispatch(pool: string): Promise<void> {
    if (this.dispatching.has(pool)) {
      this.again.add(pool);
      return;
    }
    this.dispatching.add(pool);
    try {
      do {
        this.again.delete(pool);
        while (await this.dispatchBest(pool));
      } while (this.again.has(pool));
    } finally {
      this.dispatching.delete(pool);
    }
  }

  /** Tries the best held request of the pool; true when the next one should try too. */
  private async dispatchBest(pool: string): Promise<boolean> {
    const entry = this.best(this.byPool.get(pool) ?? []);
    if (entry === undefined) return false;
    entry.state = "trying";
    let result: PickResult;
    try {
      result = await this.source().pick({ ...entry.request, retry: true });
    } catch (error) {
      // That request's failure, not the queue's: the others go on.
      this.finish(entry, { kind: "failed", error });
      return true;
    }
    if (result.kind === "saturated") {
      entry.state = "waiting";
      if (entry.expired !== undefined) this.finish(entry, this.expiredAnswer(entry, entry.expired));
      return false;
    }
    // Picked even if the exchange ended meanwhile: the exchange releases what it was given.
    this.finish(entry, result);
    return true;
  }

  /** Highest priority; then the shortest prompt, halved for each agingMs waited; then the oldest. */
  private best(held: readonly Held[]): Held | undefined {
    const now = this.now();
    const aged = (entry: Held): number => entry.request.promptTokens * 2 ** (-(now - entry.since) / this.settings.agingMs);
    let best: Held | undefined;
    for (const entry of held) {
      if (entry.state !== "waiting") continue;
      if (
        best === undefined ||
        entry.priority > best.priority ||
        (entry.priority === best.priority && aged(entry) < aged(best))
      ) {
        best = entry;
      }
    }
    return best;
  }
}
