/** Discrete-event time: handlers run in time order (ties in the order they were scheduled), each awaited before the next. */
export class EventQueue {
  private readonly heap: Array<{ at: number; order: number; run: () => void | Promise<void> }> = [];
  private scheduled = 0;
  now = 0;

  /** Runs `run` at virtual time `at` (ms; not before now). */
  at(at: number, run: () => void | Promise<void>): void {
    const entry = { at: Math.max(at, this.now), order: (this.scheduled += 1), run };
    this.heap.push(entry);
    let i = this.heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(this.heap[i]!, this.heap[parent]!)) break;
      [this.heap[i], this.heap[parent]] = [this.heap[parent]!, this.heap[i]!];
      i = parent;
    }
  }

  get size(): number {
    return this.heap.length;
  }

  /**
   * Runs every event, those scheduled meanwhile included, until none is left. With `settle`, each
   * event's promise chains (work it started and did not await) end before time moves on.
   */
  async drain(settle = false): Promise<void> {
    while (this.heap.length > 0) {
      const next = this.pop();
      this.now = next.at;
      await next.run();
      if (settle) await new Promise((resolve) => setImmediate(resolve));
    }
  }

  private pop(): { at: number; order: number; run: () => void | Promise<void> } {
    const top = this.heap[0]!;
    const last = this.heap.pop()!;
    if (this.heap.length > 0) {
      this.heap[0] = last;
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        const right = left + 1;
        let smallest = i;
        if (left < this.heap.length && this.before(this.heap[left]!, this.heap[smallest]!)) smallest = left;
        if (right < this.heap.length && this.before(this.heap[right]!, this.heap[smallest]!)) smallest = right;
        if (smallest === i) break;
        [this.heap[i], this.heap[smallest]] = [this.heap[smallest]!, this.heap[i]!];
        i = smallest;
      }
    }
    return top;
  }

  private before(a: { at: number; order: number }, b: { at: number; order: number }): boolean {
    return a.at < b.at || (a.at === b.at && a.order < b.order);
  }
}
