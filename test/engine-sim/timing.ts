import { setTimeout as sleep } from "node:timers/promises";

/** The engine's speed. See {@link EngineClock} for how the numbers combine. */
export interface TimingOptions {
  /** Prefill throughput of the whole engine, prompt tokens per second. */
  readonly prefillTokensPerSecond: number;
  /** Decode speed of one request running alone, generated tokens per second. */
  readonly decodeTokensPerSecond: number;
  /** Fixed cost of every request before its prefill (tokenizing, scheduling), ms. */
  readonly overheadMs: number;
  /** Requests running at once (vLLM's max_num_seqs); the rest wait in a FIFO queue. */
  readonly maxConcurrent: number;
  /** Each other running request makes a decode step this fraction slower (batching cost). */
  readonly decodeSlowdownPerRequest: number;
}

/**
 * A FIFO counting semaphore whose waiters can be cancelled. Cancelling drops the waiter, so an
 * abandoned request neither takes a slot later nor leaves anything pending.
 */
class Gate {
  private active = 0;
  private readonly waiters: Array<() => void> = [];

  constructor(private readonly capacity: number) {}

  get running(): number {
    return this.active;
  }

  get waiting(): number {
    return this.waiters.length;
  }

  async acquire(signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    if (this.active < this.capacity) {
      this.active++;
      return;
    }
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        this.waiters.splice(this.waiters.indexOf(grant), 1);
        reject(signal.reason);
      };
      const grant = (): void => {
        signal.removeEventListener("abort", onAbort);
        this.active++;
        resolve();
      };
      this.waiters.push(grant);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  release(): void {
    this.active--;
    this.waiters.shift()?.();
  }
}

/**
 * The timing model of one engine:
 * - a request first waits for one of `maxConcurrent` batch slots (FIFO queue);
 * - then pays `overheadMs`;
 * - then is prefilled: the engine prefills one prompt at a time at `prefillTokensPerSecond`, so a
 *   prompt also waits for the prompts ahead of it. Time to first token therefore grows with the
 *   prompt tokens already in prefill — the load signal the sidecar tracks;
 * - then each further token takes `1000 / decodeTokensPerSecond` ms, times
 *   `1 + decodeSlowdownPerRequest * (running requests - 1)`.
 * Every wait takes an AbortSignal and clears its timer when aborted.
 */
export class EngineClock {
  private readonly batch: Gate;
  private readonly prefillLane = new Gate(1);

  constructor(private readonly timing: TimingOptions) {
    this.batch = new Gate(timing.maxConcurrent);
  }

  /** Requests holding a batch slot. */
  get running(): number {
    return this.batch.running;
  }

  /** Requests waiting for a batch slot. */
  get queued(): number {
    return this.batch.waiting;
  }

  /** Waits for a batch slot; the caller must call {@link leave} once it is done. */
  enter(signal: AbortSignal): Promise<void> {
    return this.batch.acquire(signal);
  }

  leave(): void {
    this.batch.release();
  }

  async prefill(promptTokens: number, signal: AbortSignal): Promise<void> {
    await sleep(this.timing.overheadMs, undefined, { signal });
    await this.prefillLane.acquire(signal);
    try {
      await sleep((promptTokens / this.timing.prefillTokensPerSecond) * 1000, undefined, { signal });
    } finally {
      this.prefillLane.release();
    }
  }

  decodeStep(signal: AbortSignal): Promise<void> {
    const slowdown = 1 + this.timing.decodeSlowdownPerRequest * Math.max(0, this.running - 1);
    return sleep((1000 / this.timing.decodeTokensPerSecond) * slowdown, undefined, { signal });
  }
}

/** Resolves never; rejects with the abort reason once `signal` aborts. Holds no timer. */
export function untilAborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    signal.throwIfAborted();
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
}
