import type { PoolDirectory } from "../../pools/pools.js";
import { TokenCounter, type TokenCounterOptions } from "../tokens.js";
import { loadHuggingFaceTokenizer } from "./huggingface.js";
import type { TextTokenizer } from "./o200k.js";

/** A pool's tokenizer: the default o200k, or a Hugging Face `tokenizer.json` on disk. */
export type TokenizerSpec = "o200k" | { file: string; approximateAboveChars: number };

export interface PoolTokenizer {
  name: string;
  tokenizer: TokenizerSpec;
}

export type LoadTokenizer = (file: string) => Promise<TextTokenizer>;

/**
 * Which counter prices a request: the one of the pool serving its model. A tokenizer file loads
 * in the background (seconds for a large vocabulary); until it is in, its pools are priced by the
 * estimate, and if it fails they keep the counter they had (the estimate for a new pool).
 */
export class TokenizerRegistry {
  private readonly byPool = new Map<string, TokenCounter>();
  /** Loaded and loading tokenizers by file, so a reload naming the same file loads nothing. */
  private readonly files = new Map<string, Promise<TextTokenizer>>();
  private readonly o200k: TokenCounter;
  private readonly estimate: TokenCounter;
  /** Bumped by each configure: a load that finishes after a newer config must not undo it. */
  private generation = 0;

  constructor(
    private readonly options: TokenCounterOptions,
    private readonly directory: () => PoolDirectory,
    private readonly load: LoadTokenizer = loadHuggingFaceTokenizer,
  ) {
    this.o200k = new TokenCounter(options);
    this.estimate = new TokenCounter(options, null);
  }

  /** The counter for a model's pool; o200k when no pool serves it (the request is refused anyway). */
  forModel(model: string | undefined): TokenCounter {
    const pool = this.directory().forModel(model);
    return (pool === undefined ? undefined : this.byPool.get(pool.name)) ?? this.o200k;
  }

  /**
   * Applies the pools' tokenizers. Resolves once every file is loaded; rejects with the first
   * failure, whose message names the file (the pools that use it keep their previous counter).
   */
  async configure(pools: readonly PoolTokenizer[]): Promise<void> {
    const generation = (this.generation += 1);
    const wanted = new Set(pools.flatMap((pool) => (pool.tokenizer === "o200k" ? [] : [pool.tokenizer.file])));
    // Unused vocabularies hold tens of MB each.
    for (const file of this.files.keys()) if (!wanted.has(file)) this.files.delete(file);
    const previous = new Map(this.byPool);
    this.byPool.clear();
    const loads = pools.map(async (pool) => {
      const spec = pool.tokenizer;
      if (spec === "o200k") {
        this.byPool.set(pool.name, this.o200k);
        return;
      }
      this.byPool.set(pool.name, this.estimate);
      let loading = this.files.get(spec.file);
      if (loading === undefined) {
        loading = this.load(spec.file);
        this.files.set(spec.file, loading);
      }
      try {
        const tokenizer = await loading;
        if (generation === this.generation) this.byPool.set(pool.name, new TokenCounter({ ...this.options, approximateAboveChars: spec.approximateAboveChars }, tokenizer));
      } catch (error) {
        // Forget the failure so that a reload naming the file again retries it.
        if (this.files.get(spec.file) === loading) this.files.delete(spec.file);
        if (generation === this.generation) this.byPool.set(pool.name, previous.get(pool.name) ?? this.estimate);
        throw error;
      }
    });
    await Promise.all(loads);
  }
}
