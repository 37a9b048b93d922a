/** Which deletes came for an id that was not open. */
export interface DeleteKinds {
  prompt: boolean;
  stats: boolean;
}

interface Waiting extends DeleteKinds {
  timer: NodeJS.Timeout;
}

/**
 * Deletes that came before their add (the gateway sends add and delete on separate connections,
 * so a short request's delete can overtake its add), or for an id already gone. As the Go
 * service does (`time.AfterFunc` in pkg/meta/load/load_stats.go), each is answered at once and
 * retried once, `retryMs` later; the add, if it comes first, applies it at once. At most
 * `capacity` ids wait, so a flood of deletes for ids that never come cannot grow memory; beyond
 * it a delete is dropped and `full` is told once until there is room again.
 */
export class EarlyDeletes {
  private readonly waiting = new Map<string, Waiting>();
  private warnedFull = false;

  constructor(
    private readonly retryMs: number,
    private readonly capacity: number,
    private readonly retry: (id: string, kinds: DeleteKinds) => void,
    private readonly full: (capacity: number) => void,
  ) {}

  /** Keep this delete for its add, or for the retry. */
  defer(id: string, kind: keyof DeleteKinds): void {
    let entry = this.waiting.get(id);
    if (entry === undefined) {
      if (this.waiting.size >= this.capacity) {
        if (!this.warnedFull) this.full(this.capacity);
        this.warnedFull = true;
        return;
      }
      entry = { prompt: false, stats: false, timer: setTimeout(() => this.retryNow(id), this.retryMs).unref() };
      this.waiting.set(id, entry);
    }
    entry[kind] = true;
  }

  /** The deletes waiting for this id, if any; they stay (and their retry with them) until `settle`. */
  pending(id: string): DeleteKinds | undefined {
    const entry = this.waiting.get(id);
    return entry === undefined ? undefined : { prompt: entry.prompt, stats: entry.stats };
  }

  /** The waiting deletes were applied: no retry. */
  settle(id: string): void {
    const entry = this.waiting.get(id);
    if (entry === undefined) return;
    clearTimeout(entry.timer);
    this.waiting.delete(id);
    this.warnedFull = false;
  }

  private retryNow(id: string): void {
    const kinds = this.pending(id);
    this.settle(id);
    if (kinds !== undefined) this.retry(id, kinds);
  }

  get size(): number {
    return this.waiting.size;
  }

  /** Drop every waiting delete and its retry (shutdown). */
  close(): void {
    for (const id of [...this.waiting.keys()]) this.settle(id);
  }
}
