import { KvCache } from "./kv-cache.js";

/**
 * One engine's speed and capacity, in the terms of vLLM's V1 scheduler with chunked prefill.
 * Each step runs one forward pass over every request scheduled in it and lasts
 * `stepBaseMs + decodeMsPerSequence × decodes + prefillMsPerToken × prefill tokens`.
 */
export interface EngineModel {
  /** Tokens scheduled per step, decodes and prefill chunks together (max_num_batched_tokens). */
  readonly tokenBudget: number;
  /** Requests running at once (max_num_seqs). */
  readonly maxRunning: number;
  /** KV-cache blocks of the engine. */
  readonly kvBlocks: number;
  /** Tokens per KV-cache block (block_size). */
  readonly blockSize: number;
  /** Whether full prompt blocks are cached for later requests (enable_prefix_caching). */
  readonly prefixCaching: boolean;
  readonly stepBaseMs: number;
  readonly decodeMsPerSequence: number;
  readonly prefillMsPerToken: number;
}

/** A request as the engine sees it: its prompt as chained block hashes, and how long its answer is. */
export interface EngineRequest {
  readonly id: string;
  readonly promptTokens: number;
  /** The chained content hash of each full block of the prompt (`blockSize` tokens each), in order. */
  readonly blockHashes: readonly string[];
  /** Tokens to generate (≥ 1). */
  readonly outputTokens: number;
}

/** What one step did. */
export interface StepResult {
  readonly durationMs: number;
  /** Requests whose first token this step produced. */
  readonly firstTokens: readonly string[];
  /** Tokens produced by request, first tokens included. */
  readonly tokens: ReadonlyMap<string, number>;
  /** Requests that produced their last token. */
  readonly finished: readonly string[];
  /** Requests pushed back to waiting for want of KV blocks (they recompute later). */
  readonly preempted: readonly string[];
  /** Requests admitted this step (again, after a preemption), with the prompt tokens their cached prefix served (vLLM's cached_tokens). */
  readonly admitted: ReadonlyMap<string, number>;
  readonly prefillTokens: number;
  readonly decodes: number;
}

interface Sequence {
  readonly request: EngineRequest;
  /** Tokens whose KV is computed (prompt first, then generated ones fed back). */
  computed: number;
  generated: number;
  /** Blocks held: named ones by hash (prompt blocks, findable by later requests), then anonymous ones. */
  named: string[];
  anonymous: number;
}

const blocksFor = (tokens: number, blockSize: number): number => Math.ceil(tokens / blockSize);

/**
 * The engine's scheduler, one step at a time, as vLLM's V1 scheduler works: running requests
 * first (a decode token each, or the next chunk of an unfinished prefill), preempting the most
 * recently admitted running request when KV blocks run out; then, if nothing was preempted,
 * waiting requests in arrival order while the token budget, `maxRunning` and free blocks allow,
 * their cached prefix taken from the cache. Time is the caller's: `step()` says how long the
 * step lasts, and the caller applies its result once that time has passed.
 */
export class EngineScheduler {
  readonly cache: KvCache;
  private readonly waiting: Sequence[] = [];
  private running: Sequence[] = [];
  private readonly known = new Map<string, Sequence>();

  constructor(readonly model: EngineModel) {
    this.cache = new KvCache(model.kvBlocks, model.blockSize, model.prefixCaching);
  }

  get runningCount(): number {
    return this.running.length;
  }

  get waitingCount(): number {
    return this.waiting.length;
  }

  /** True while a step has something to do. */
  get busy(): boolean {
    return this.running.length > 0 || this.waiting.length > 0;
  }

  /** Whether a sequence of `tokens` (prompt and answer) fits the KV cache at all: as vLLM refuses a request longer than the model's context, one that never fits would stall the queue. */
  fits(tokens: number): boolean {
    return blocksFor(tokens, this.model.blockSize) <= this.model.kvBlocks;
  }

  add(request: EngineRequest): void {
    if (this.known.has(request.id)) throw new Error(`request ${request.id} is already on this engine`);
    if (request.outputTokens < 1) throw new RangeError(`request ${request.id}: outputTokens must be ≥ 1`);
    if (!this.fits(request.promptTokens + request.outputTokens)) {
      throw new RangeError(`request ${request.id}: ${request.promptTokens + request.outputTokens} tokens do not fit in the KV cache`);
    }
    const sequence: Sequence = { request, computed: 0, generated: 0, named: [], anonymous: 0 };
    this.known.set(request.id, sequence);
    this.waiting.push(sequence);
  }

  /** Drops a request (its client left); its blocks are freed. */
  abort(id: string): void {
    const sequence = this.known.get(id);
    if (sequence === undefined) return;
    this.known.delete(id);
    this.free(sequence);
    this.running = this.running.filter((s) => s !== sequence);
    const index = this.waiting.indexOf(sequence);
    if (index >= 0) this.waiting.splice(index, 1);
  }

  /** Schedules and runs one step. */
  step(): StepResult {
    const { tokenBudget, maxRunning } = this.model;
    let budget = tokenBudget;
    // Scheduled sequences and their token counts, in order; a victim is always taken from those not scheduled yet.
    const scheduled: Sequence[] = [];
    const counts: number[] = [];
    const preempted: Sequence[] = [];
    const admitted = new Map<string, number>();
    for (let i = 0; i < this.running.length && budget > 0; ) {
      const sequence = this.running[i]!;
      const wanted = Math.min(this.tokensOf(sequence) - sequence.computed, budget);
      if (this.grow(sequence, wanted)) {
        scheduled.push(sequence);
        counts.push(wanted);
        budget -= wanted;
        i += 1;
        continue;
      }
      // No blocks: preempt from the back until this one fits, or it is the one preempted.
      const victim = this.running.pop()!;
      this.preempt(victim);
      preempted.push(victim);
      if (victim === sequence) break;
    }
    if (preempted.length === 0) {
      while (this.waiting.length > 0 && this.running.length < maxRunning && budget > 0) {
        const sequence = this.waiting[0]!;
        const total = this.tokensOf(sequence);
        // The last token is always computed: its pass samples the first new token.
        const hits = Math.min(this.cache.cachedPrefix(sequence.request.blockHashes), Math.floor((total - 1) / this.model.blockSize));
        const hitTokens = hits * this.model.blockSize;
        const wanted = Math.min(total - hitTokens, budget);
        const newBlocks = blocksFor(hitTokens + wanted, this.model.blockSize) - hits;
        // Held first, so that allocating cannot evict the very blocks it hits.
        this.cache.holdCached(sequence.request.blockHashes, hits);
        if (!this.cache.allocate(newBlocks)) {
          this.cache.release(sequence.request.blockHashes.slice(0, hits), 0);
          break;
        }
        sequence.named = sequence.request.blockHashes.slice(0, hits);
        sequence.anonymous = newBlocks;
        sequence.computed = hitTokens;
        admitted.set(sequence.request.id, Math.min(hitTokens, sequence.request.promptTokens));
        this.waiting.shift();
        this.running.push(sequence);
        scheduled.push(sequence);
        counts.push(wanted);
        budget -= wanted;
      }
    }
    return this.run(scheduled, counts, preempted, admitted);
  }

  private run(scheduled: readonly Sequence[], counts: readonly number[], preempted: Sequence[], admitted: Map<string, number>): StepResult {
    let prefillTokens = 0;
    let decodes = 0;
    const firstTokens: string[] = [];
    const tokens = new Map<string, number>();
    const finished: string[] = [];
    for (let k = 0; k < scheduled.length; k++) {
      const sequence = scheduled[k]!;
      const count = counts[k]!;
      const total = this.tokensOf(sequence);
      const decoding = sequence.computed === total - 1 && sequence.generated > 0 && count === 1;
      if (decoding) decodes += 1;
      else prefillTokens += count;
      sequence.computed += count;
      this.name(sequence);
      if (sequence.computed < total) continue;
      // The pass over the last uncomputed token samples the next one.
      sequence.generated += 1;
      if (sequence.generated === 1) firstTokens.push(sequence.request.id);
      tokens.set(sequence.request.id, 1);
      if (sequence.generated >= sequence.request.outputTokens) {
        finished.push(sequence.request.id);
        this.known.delete(sequence.request.id);
        this.free(sequence);
      }
    }
    if (finished.length > 0) {
      const done = new Set(finished);
      this.running = this.running.filter((s) => !done.has(s.request.id));
    }
    const { stepBaseMs, decodeMsPerSequence, prefillMsPerToken } = this.model;
    const worked = scheduled.length > 0;
    return {
      durationMs: worked ? stepBaseMs + decodeMsPerSequence * decodes + prefillMsPerToken * prefillTokens : 0,
      firstTokens,
      tokens,
      finished,
      preempted: preempted.map((s) => s.request.id),
      admitted,
      prefillTokens,
      decodes,
    };
  }

  /** Prompt tokens, then each generated token but the newest (whose KV the next pass computes). */
  private tokensOf(sequence: Sequence): number {
    return sequence.request.promptTokens + sequence.generated;
  }

  /** Takes the blocks `more` tokens beyond those computed need. False (nothing taken) when there are not enough. */
  private grow(sequence: Sequence, more: number): boolean {
    const held = sequence.named.length + sequence.anonymous;
    const needed = blocksFor(sequence.computed + more, this.model.blockSize) - held;
    if (needed <= 0) return true;
    if (!this.cache.allocate(needed)) return false;
    sequence.anonymous += needed;
    return true;
  }

  /** Full prompt blocks just computed become findable by later requests. */
  private name(sequence: Sequence): void {
    const { blockHashes } = sequence.request;
    const full = Math.min(Math.floor(sequence.computed / this.model.blockSize), blockHashes.length);
    while (sequence.named.length < full && sequence.anonymous > 0) {
      const hash = blockHashes[sequence.named.length]!;
      if (!this.cache.fill(hash)) break;
      sequence.named.push(hash);
      sequence.anonymous -= 1;
    }
  }

  private preempt(sequence: Sequence): void {
    this.free(sequence);
    sequence.computed = 0;
    this.waiting.unshift(sequence);
  }

  private free(sequence: Sequence): void {
    this.cache.release(sequence.named, sequence.anonymous);
    sequence.named = [];
    sequence.anonymous = 0;
  }
}
