import type { Logger } from "../log.js";
import type { ExplainedPick } from "./explanation.js";


/**
 * The last picks explained, for `GET /debug/picks`, and one debug log line per pick. Survives
 * config reloads (the picker does not). When it keeps none and debug logging is off, `wanted`
 * is false and the picker builds no explanation at all.
 */
export class PickHistory {
  /** A ring: once full, `next` is the oldest entry, the one the next pick replaces. */
  private ring: ExplainedPick[] = [];
  private next = 0;

  constructor(
    private capacity: number,
    private readonly log: Logger,
  ) {}

  /** How many picks it keeps; 0 = none. */
  get size(): number {
    return this.capacity;
  }

  /** Read per pick: the log level may change at run time (`POST /log/level`). */
  wanted(): boolean {
    return this.capacity > 0 || this.log.isLevelEnabled("debug");
  }

  record(pick: ExplainedPick): void {
    if (this.log.isLevelEnabled("debug")) this.log.debug(pick, "pick");
    if (this.capacity === 0) return;
    if (this.ring.length < this.capacity) this.ring.push(pick);
    else this.ring[this.next] = pick;
    this.next = (this.next + 1) % this.capacity;
  }

  /** Newest first, at most `limit`. */
  recent(limit = this.capacity): ExplainedPick[] {
    const count = Math.min(limit, this.ring.length);
    // Until the ring is full, `next` is its length, so the newest is at next − 1 either way.
    return Array.from({ length: count }, (_, k) => this.ring[(this.next - 1 - k + this.ring.length) % this.ring.length]);
  }

  /** A reload's new size: the newest picks that fit are kept. */
  resize(capacity: number): void {
    if (capacity === this.capacity) return;
    this.ring = this.recent(capacity).reverse();
    this.capacity = capacity;
    this.next = capacity === 0 ? 0 : this.ring.length % capacity;
  }
}
