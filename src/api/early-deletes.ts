/** Which deletes are waiting for an id's add. */
export interface WaitingDeletes {
  prompt: boolean;
  stats: boolean;
  /** Tell the waiting deletes they took effect (call after applying them). */
  settle(): void;
}

interface Waiting {
  prompt: boolean;
  stats: boolean;
  resolvers: Array<(applied: boolean) => void>;
  timer: NodeJS.Timeout;
}

/**
 * Deletes that arrived before their add. The gateway sends add and delete on separate
 * connections, so a short request's delete can overtake its add; the Go service waits 1 s
 * for the add. Each early delete is held with one timer (no polling) and answered when the
 * add arrives or the wait runs out. At most `capacity` ids wait, so a flood of deletes for
 * ids that never come cannot grow memory.
 */
export class EarlyDeletes {
  private readonly waiting = new Map<string, Waiting>();

  constructor(
    private readonly waitMs: number,
    private readonly capacity: number,
  ) {}

  /** Resolves true when the add arrived within the wait (the delete was applied), false otherwise. */
  wait(id: string, kind: "prompt" | "stats"): Promise<boolean> {
    return new Promise((resolve) => {
      let entry = this.waiting.get(id);
      if (entry === undefined) {
        if (this.waiting.size >= this.capacity) return resolve(false);
        const timer = setTimeout(() => this.finish(id, false), this.waitMs);
        timer.unref();
        entry = { prompt: false, stats: false, resolvers: [], timer };
        this.waiting.set(id, entry);
      }
      entry[kind] = true;
      entry.resolvers.push(resolve);
    });
  }

  /** The deletes that were waiting for this id, now handed to the caller to apply. */
  take(id: string): WaitingDeletes | undefined {
    const entry = this.waiting.get(id);
    if (entry === undefined) return undefined;
    clearTimeout(entry.timer);
    this.waiting.delete(id);
    return { prompt: entry.prompt, stats: entry.stats, settle: () => entry.resolvers.forEach((resolve) => resolve(true)) };
  }

  get size(): number {
    return this.waiting.size;
  }

  /** Answer every waiting delete as not applied (shutdown). */
  close(): void {
    for (const id of [...this.waiting.keys()]) this.finish(id, false);
  }

  private finish(id: string, applied: boolean): void {
    const entry = this.waiting.get(id);
    if (entry === undefined) return;
    clearTimeout(entry.timer);
    this.waiting.delete(id);
    for (const resolve of entry.resolvers) resolve(applied);
  }
}
