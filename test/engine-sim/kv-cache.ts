import { LruSet } from "../../src/scheduling/lru.js";

/**
 * An engine's KV cache as vLLM's block manager keeps it: fixed-size blocks, and with prefix
 * caching each full block of a prompt known by the chained hash of its content, so a later
 * request starting with the same tokens reuses the blocks instead of prefilling them again.
 * Blocks no request holds stay cached until evicted, least recently freed first.
 */
export class KvCache {
  /** Blocks never used, or freed without content worth keeping. */
  private blank: number;
  /** hash → block state, for every block holding a known full block of content. */
  private readonly cached = new Map<string, { holders: number }>();
  /** Cached blocks no request holds, least recently freed first: the eviction order. */
  private readonly evictable = new LruSet<string>();

  constructor(
    readonly blocks: number,
    readonly blockSize: number,
    private readonly prefixCaching: boolean,
  ) {
    this.blank = blocks;
  }

  /** Blocks that can be handed out now (blank or evictable). */
  get free(): number {
    return this.blank + this.evictable.size;
  }

  /** Blocks held by requests. */
  get used(): number {
    return this.blocks - this.free;
  }

  /** How many of the leading blocks are cached (hits stop at the first miss, as the hashes chain). */
  cachedPrefix(hashes: readonly string[]): number {
    if (!this.prefixCaching) return 0;
    let hits = 0;
    while (hits < hashes.length && this.cached.has(hashes[hits]!)) hits += 1;
    return hits;
  }

  /** Takes hold of the first `count` blocks of `hashes`, known to be cached (see `cachedPrefix`). */
  holdCached(hashes: readonly string[], count: number): void {
    for (const hash of hashes.slice(0, count)) {
      const block = this.cached.get(hash);
      if (block === undefined) throw new Error(`block ${hash} is not cached`);
      if (block.holders === 0) this.evictable.delete(hash);
      block.holders += 1;
    }
  }

  /** Hands out `count` blank blocks, evicting the least recently freed cached ones as needed. False (nothing taken) when there are not enough. */
  allocate(count: number): boolean {
    if (count > this.free) return false;
    for (let taken = 0; taken < count; taken++) {
      if (this.blank > 0) {
        this.blank -= 1;
        continue;
      }
      this.cached.delete(this.evictable.takeOldest()!);
    }
    return true;
  }

  /**
   * A held blank block now holds the full block of content `hash`: it becomes findable. When
   * that content is already cached in another block, this one stays anonymous (vLLM keeps the
   * first block of a given hash).
   */
  fill(hash: string): boolean {
    if (!this.prefixCaching || this.cached.has(hash)) return false;
    this.cached.set(hash, { holders: 1 });
    return true;
  }

  /** Lets go of a request's blocks: its named ones (by hash) stay cached, the rest go blank. */
  release(named: readonly string[], anonymous: number): void {
    for (const hash of named) {
      const block = this.cached.get(hash);
      if (block === undefined) continue;
      block.holders -= 1;
      if (block.holders === 0) this.evictable.touch(hash);
    }
    this.blank += anonymous;
  }
}
