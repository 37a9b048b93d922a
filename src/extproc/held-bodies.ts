/**
 * The bytes of request bodies held for the pick, across every exchange: each body is held until
 * its pick is made, so a burst of large uploads is bounded as a whole, not only one by one.
 */
export class HeldBodies {
  private held = 0;

  constructor(readonly limit: number) {}

  /** Counts `bytes` more as held; false (and nothing counted) when that would pass the limit. */
  take(bytes: number): boolean {
    if (this.held + bytes > this.limit) return false;
    this.held += bytes;
    return true;
  }

  give(bytes: number): void {
    this.held -= bytes;
  }
}
