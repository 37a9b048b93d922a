import { LruSet } from "./lru.js";

/** Block hashes kept over all engines: about 80 bytes each, so the index stays within ~20 MB. */
const MAX_BLOCKS = 262_144;

/**
 * Which prompt blocks each engine is likely to hold in its prefix cache, learnt from the picks
 * (the blocks of each request sent there: this sidecar's, and other replicas' when they share),
 * least recently used dropped first. It only collects; the prefix scorer reads it.
 */
export class PrefixIndex {
  private readonly engines = new Map<string, LruSet<number>>();
  private held = 0;
  private recorded: ((engine: string, blocks: readonly number[]) => void) | undefined;

  constructor(private readonly maxBlocks: number = MAX_BLOCKS) {}

  /** How many leading blocks of `blocks` the engine holds (the match stops at the first it lacks). */
  matched(engine: string, blocks: readonly number[]): number {
    const set = this.engines.get(engine);
    if (set === undefined) return 0;
    let count = 0;
    while (count < blocks.length && set.has(blocks[count]!)) count += 1;
    return count;
  }

  /** Told of each record this sidecar's own picks make (not what `learn` takes in), to share them with other replicas. */
  onRecord(listener: (engine: string, blocks: readonly number[]) => void): void {
    this.recorded = listener;
  }

  /** This sidecar sent a request with these blocks to the engine. */
  record(engine: string, blocks: readonly number[]): void {
    if (blocks.length === 0) return;
    this.hold(engine, blocks);
    this.recorded?.(engine, blocks);
  }

  /** Another replica sent a request with these blocks to the engine. */
  learn(engine: string, blocks: readonly number[]): void {
    if (blocks.length > 0) this.hold(engine, blocks);
  }

  /** The engine now holds these blocks, as the most recently used; past its share of the cap (or this request's blocks, if more), its oldest go. */
  private hold(engine: string, blocks: readonly number[]): void {
    let set = this.engines.get(engine);
    if (set === undefined) this.engines.set(engine, (set = new LruSet()));
    this.held -= set.size;
    for (const block of blocks) set.touch(block);
    const share = Math.max(blocks.length, Math.floor(this.maxBlocks / this.engines.size));
    while (set.size > share) set.takeOldest();
    this.held += set.size;
  }

  /** Blocks held over all engines. */
  get size(): number {
    return this.held;
  }
}
