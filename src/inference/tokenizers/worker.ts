import type { Worker } from "node:worker_threads";
import { startThread, threadModule } from "../../threads.js";
import { approximateTokens } from "../estimate.js";
import { TokenizerFileError } from "./file-error.js";
import type { CountReply, LoadReply } from "./thread.js";

/** The thread that loads `file` and counts with it (thread.ts). */
export const startTokenizerThread = (file: string): Worker => startThread(threadModule("thread", import.meta.url), { file });

interface PendingCount {
  text: string;
  resolve(tokens: number): void;
  /** performance.now() when posted. */
  postedAt: number;
}

/**
 * A count unanswered this long means the thread is stuck (a text that sends the tokenizer into a
 * loop): it is stopped, as if it had crashed. Healthy counts take ~20 ms at most.
 */
const STUCK_AFTER_MS = 2000;

/**
 * One tokenizer.json loaded and run in its own worker thread, so that neither the load (~1 s of
 * JSON parsing and vocabulary tables) nor counting (~1 µs a character) holds the event loop.
 * Counts never reject: whatever the thread cannot answer is estimated.
 */
export class TokenizerWorker {
  /** True once loaded, false when closed first; rejects naming the file when it cannot load. */
  readonly loaded: Promise<boolean>;
  private state: "loading" | "ready" | "gone" = "loading";
  private closed = false;
  /** Texts posted and not answered yet, oldest first: the thread answers in order. */
  private readonly pending: PendingCount[] = [];
  private pendingChars = 0;
  /** Runs while counts are pending, stopping a thread that no longer answers. */
  private watchdog: NodeJS.Timeout | undefined;
  private failure: Error | undefined;

  /** `lost`: the thread stopped after it had loaded (its pools are estimated from then on). */
  constructor(
    readonly file: string,
    lost: (error: Error) => void,
    private readonly thread: Worker = startTokenizerThread(file),
    private readonly stuckAfterMs = STUCK_AFTER_MS,
  ) {
    this.loaded = new Promise((resolve, reject) => {
      this.thread.on("message", (reply: LoadReply | CountReply) => {
        if (this.state === "ready") return this.answered(reply as CountReply);
        const load = reply as LoadReply;
        if (load.loaded) {
          this.state = "ready";
          // Idle, it must not keep a stopping process alive; pending counts hold it (count()).
          this.thread.unref();
          resolve(true);
        } else {
          this.state = "gone";
          reject(new TokenizerFileError(load.message));
          void this.thread.terminate();
        }
      });
      this.thread.on("error", (error) => (this.failure = error));
      this.thread.on("exit", (code) => {
        const wasReady = this.state === "ready";
        this.state = "gone";
        this.pendingChars = 0;
        clearInterval(this.watchdog);
        for (const count of this.pending.splice(0)) count.resolve(approximateTokens(count.text));
        // Settling twice is a no-op: these only matter when the load had not settled yet.
        if (this.closed) return resolve(false);
        const error = new Error(`tokenizer file ${file}: its worker thread stopped (${this.failure?.message ?? `exit code ${code}`})`);
        reject(error);
        if (wasReady) lost(error);
      });
    });
  }

  /**
   * The text's tokens, counted by the thread. Estimated at once when the thread is not running,
   * or when its backlog would exceed `maxPendingChars`: under a burst, a count waits a bounded time.
   */
  count(text: string, maxPendingChars: number): number | Promise<number> {
    if (this.state !== "ready" || this.pendingChars + text.length > maxPendingChars) return approximateTokens(text);
    if (this.pending.length === 0) this.thread.ref();
    this.pendingChars += text.length;
    this.thread.postMessage(text);
    if (this.watchdog === undefined) {
      this.watchdog = setInterval(() => this.checkStuck(), Math.max(10, this.stuckAfterMs / 4));
      this.watchdog.unref();
    }
    const postedAt = performance.now();
    return new Promise((resolve) => this.pending.push({ text, resolve, postedAt }));
  }

  private checkStuck(): void {
    const oldest = this.pending[0];
    if (oldest === undefined) {
      clearInterval(this.watchdog);
      this.watchdog = undefined;
      return;
    }
    if (performance.now() - oldest.postedAt < this.stuckAfterMs) return;
    this.failure = new Error(`no answer to a count for ${this.stuckAfterMs} ms`);
    // Its exit settles the pending counts (by the estimate) and reports the loss.
    void this.thread.terminate();
  }

  /** Stops the thread; pending counts resolve to the estimate. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.watchdog);
    await this.thread.terminate();
  }

  private answered(reply: CountReply): void {
    const count = this.pending.shift();
    if (count === undefined) return;
    this.pendingChars -= count.text.length;
    if (this.pending.length === 0) this.thread.unref();
    count.resolve(reply ?? approximateTokens(count.text));
  }
}
