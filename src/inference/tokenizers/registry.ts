import type { PoolDirectory } from "../../pools/pools.js";
import { TokenCounter, type TokenCounterOptions } from "../tokens.js";
import { TokenizerWorker } from "./worker.js";

/** A pool's tokenizer: the default o200k, or a Hugging Face `tokenizer.json` on disk. */
export type TokenizerSpec = "o200k" | { file: string; countWholeUpTo: number };

export interface PoolTokenizer {
  name: string;
  tokenizer: TokenizerSpec;
}

export type StartTokenizer = (file: string, lost: (error: Error) => void) => TokenizerWorker;

/**
 * A worker's backlog beyond this many of the pool's largest counted texts is not waited for: the
 * text is estimated instead (at ~1 µs a character, 4 × 16,384 characters are ~65 ms of waiting).
 */
const BACKLOG_TEXTS = 4;

interface PoolCounter {
  counter: TokenCounter;
  /** The worker the counter counts with, if any. */
  worker?: TokenizerWorker;
}

/**
 * Which counter prices a request: the one of the pool serving its model. A tokenizer file loads
 * in its own worker thread (seconds for a large vocabulary); until it is in, its pools are priced
 * by the estimate, and if it fails they keep the counter they had (the estimate for a new pool).
 * A worker that stops later leaves its pools on the estimate until a configure names its file again.
 */
export class TokenizerRegistry {
  private readonly byPool = new Map<string, PoolCounter>();
  /** Workers by file, loaded or loading, so a reload naming the same file loads nothing. */
  private readonly workers = new Map<string, TokenizerWorker>();
  private readonly o200k: PoolCounter;
  private readonly estimate: PoolCounter;
  /** Bumped by each configure: a load that finishes after a newer config must not undo it. */
  private generation = 0;

  /** `lost`: told when a loaded worker stops (crash, out of memory); configure() reports load failures. */
  constructor(
    private readonly options: TokenCounterOptions,
    private readonly directory: () => PoolDirectory,
    private readonly lost: (error: Error) => void,
    private readonly start: StartTokenizer = (file, lost) => new TokenizerWorker(file, lost),
  ) {
    this.o200k = { counter: new TokenCounter(options) };
    this.estimate = { counter: new TokenCounter(options, null) };
  }

  /** The counter for a model's pool; o200k when no pool serves it (the request is refused anyway). */
  forModel(model: string | undefined): TokenCounter {
    const pool = this.directory().forModel(model);
    return ((pool === undefined ? undefined : this.byPool.get(pool.name)) ?? this.o200k).counter;
  }

  /**
   * Applies the pools' tokenizers. Resolves once every file is loaded; rejects with the first
   * failure, whose message names the file (the pools that use it keep their previous counter).
   * Workers no pool uses any more are then stopped.
   */
  async configure(pools: readonly PoolTokenizer[]): Promise<void> {
    const generation = (this.generation += 1);
    const previous = new Map(this.byPool);
    this.byPool.clear();
    const loads = pools.map(async (pool) => {
      const spec = pool.tokenizer;
      if (spec === "o200k") {
        this.byPool.set(pool.name, this.o200k);
        return;
      }
      this.byPool.set(pool.name, this.estimate);
      const worker = this.workers.get(spec.file) ?? this.startWorker(spec.file);
      try {
        const loaded = await worker.loaded;
        if (!loaded || generation !== this.generation) return;
        const maxPendingChars = BACKLOG_TEXTS * spec.countWholeUpTo;
        // Counted before the pick: the worker counts while the loop serves other streams, and a
        // recount after it would spend the backlog that keeps later picks' samples exact.
        const counter = new TokenCounter(
          { countWholeUpTo: spec.countWholeUpTo, imageTokens: this.options.imageTokens, audioTokens: this.options.audioTokens },
          { count: (text) => worker.count(text, maxPendingChars) },
        );
        this.byPool.set(pool.name, { counter, worker });
      } catch (error) {
        // Forget the failure so that a reload naming the file again retries it.
        if (this.workers.get(spec.file) === worker) this.workers.delete(spec.file);
        if (generation === this.generation) this.byPool.set(pool.name, previous.get(pool.name) ?? this.estimate);
        throw error;
      }
    });
    const settled = await Promise.allSettled(loads);
    if (generation === this.generation) this.stopUnused();
    const failed = settled.find((result) => result.status === "rejected");
    if (failed !== undefined) throw failed.reason;
  }

  /** Stops every worker; counts still pending resolve to the estimate. */
  async close(): Promise<void> {
    const workers = [...this.workers.values()];
    this.workers.clear();
    await Promise.all(workers.map((worker) => worker.close()));
  }

  private startWorker(file: string): TokenizerWorker {
    const worker = this.start(file, (error) => {
      // A configure naming the file again starts a new worker.
      if (this.workers.get(file) === worker) this.workers.delete(file);
      this.lost(error);
    });
    this.workers.set(file, worker);
    return worker;
  }

  /** A file dropped by a reload keeps its worker while a pool still counts with it (a failed replacement). */
  private stopUnused(): void {
    const used = new Set([...this.byPool.values()].map((pool) => pool.worker));
    for (const [file, worker] of this.workers) {
      if (used.has(worker)) continue;
      this.workers.delete(file);
      void worker.close();
    }
  }
}
