/**
 * Keys in least-recently-used order. A Map's insertion order would do, but V8 leaves deleted
 * entries in place until it rehashes, so taking the oldest over and over walks them all each
 * time; here each key's latest use is a stamp, and stale queue entries are skipped once.
 */
export class LruSet<K> {
  private readonly stamps = new Map<K, number>();
  private queue: Array<{ key: K; stamp: number }> = [];
  private head = 0;
  private clock = 0;

  get size(): number {
    return this.stamps.size;
  }

  has(key: K): boolean {
    return this.stamps.has(key);
  }

  /** Adds the key, or makes it the most recently used. */
  touch(key: K): void {
    const stamp = (this.clock += 1);
    this.stamps.set(key, stamp);
    this.queue.push({ key, stamp });
    // Stale entries stay at most as many as live ones.
    if (this.queue.length - this.head > 2 * this.stamps.size + 64) this.compact();
  }

  delete(key: K): boolean {
    return this.stamps.delete(key);
  }

  /** Removes and returns the least recently used key. */
  takeOldest(): K | undefined {
    while (this.head < this.queue.length) {
      const { key, stamp } = this.queue[this.head]!;
      this.head += 1;
      if (this.stamps.get(key) === stamp) {
        this.stamps.delete(key);
        return key;
      }
    }
    return undefined;
  }

  private compact(): void {
    this.queue = this.queue.slice(this.head).filter(({ key, stamp }) => this.stamps.get(key) === stamp);
    this.head = 0;
  }
}
