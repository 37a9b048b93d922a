import type { Worker } from "node:worker_threads";
import { startThread, threadModule } from "../threads.js";
import { apiRoute, type ApiRoute } from "./apis/index.js";
import type { InferenceRequest, ParseResult } from "./request.js";

/** A body sent to the parsing thread. */
export interface ParseJob {
  id: number;
  /** The adapter chosen for the request (by name: functions do not cross threads) and the normalised path it read. */
  api: string;
  path: string;
  body: Uint8Array;
  /** Texts longer than this come back as a sample (prompt-sample.ts). */
  wholeUpToCost: number;
  /** Build the body with `stream_options.include_usage` added, when the request lacks it. */
  includeUsage: boolean;
}

/** What the thread answers: a ParseResult whose body rewrite is built already (functions do not cross threads). */
export type OffThreadParse =
  | { ok: false; message: string }
  | { ok: true; request: Omit<InferenceRequest, "withUsageBody">; withUsageBody?: Uint8Array };

/** The thread's answer: the parse, or what failed in the parser itself (a defect, not the body's fault). */
type ThreadReply = OffThreadParse | { failed: string };

export interface RequestParserOptions {
  /** Bodies larger than this are parsed on the parsing thread; smaller ones inline (~10 ms at 512 KiB of chat turns). */
  offThreadAboveBytes: number;
  /** The largest text any pool's tokenizer counts whole (longer ones are sampled). */
  wholeUpToCost: () => number;
  includeUsage: boolean;
  /** Told when the thread stops unexpectedly (the bodies it held are parsed inline). */
  lost: (error: Error) => void;
}

/**
 * Parses request bodies: small ones at once, large ones on a worker thread, so that other streams
 * keep flowing while megabytes of JSON parse. If the thread stops, the bodies it held are parsed
 * inline (correct, if slow) and the next large body starts a new thread; a parse that fails in the
 * parser itself rejects, for that request alone.
 */
export class RequestParser {
  private thread: Worker | undefined;
  private readonly pending = new Map<number, { route: ApiRoute; body: Buffer; resolve(result: ParseResult): void; reject(error: Error): void }>();
  private sequence = 0;

  constructor(private readonly options: RequestParserOptions) {}

  /** `route`: the request's adapter, chosen once (or a target as sent, whose adapter is chosen here). */
  parse(route: ApiRoute | string, body: Buffer | undefined): ParseResult | Promise<ParseResult> {
    const routed = typeof route === "string" ? apiRoute(route) : route;
    if (body === undefined || body.length <= this.options.offThreadAboveBytes) return routed.api.parse(routed.path, body, this.options.includeUsage);
    const thread = this.thread ?? this.start();
    const id = (this.sequence += 1);
    // A copy of exactly the body, moved (not cloned) to the thread: the body itself is still to be forwarded.
    const copy = new Uint8Array(body);
    const job: ParseJob = { id, api: routed.api.name, path: routed.path, body: copy, wholeUpToCost: this.options.wholeUpToCost(), includeUsage: this.options.includeUsage };
    if (this.pending.size === 0) thread.ref();
    thread.postMessage(job, [copy.buffer]);
    return new Promise((resolve, reject) => this.pending.set(id, { route: routed, body, resolve, reject }));
  }

  async close(): Promise<void> {
    const thread = this.thread;
    this.thread = undefined;
    await thread?.terminate();
  }

  private start(): Worker {
    const thread = startThread(threadModule("parse-thread", import.meta.url), undefined);
    thread.unref();
    thread.on("message", ({ id, reply }: { id: number; reply: ThreadReply }) => {
      const job = this.pending.get(id);
      if (job === undefined) return;
      this.pending.delete(id);
      if (this.pending.size === 0) thread.unref();
      if ("failed" in reply) job.reject(new Error(`request parsing thread failed: ${reply.failed}`));
      else job.resolve(toParseResult(reply));
    });
    let failure: Error | undefined;
    thread.on("error", (error) => (failure = error));
    thread.on("exit", (code) => {
      const closed = this.thread !== thread;
      this.thread = undefined;
      if (!closed) this.options.lost(new Error(`request parsing thread stopped: ${failure?.message ?? `exit code ${code}`}`));
      const stranded = [...this.pending.values()];
      this.pending.clear();
      for (const { route, body, resolve } of stranded) resolve(route.api.parse(route.path, body, this.options.includeUsage));
    });
    this.thread = thread;
    return thread;
  }
}

function toParseResult(reply: OffThreadParse): ParseResult {
  if (!reply.ok) return reply;
  const bytes = reply.withUsageBody;
  const request: InferenceRequest = { ...reply.request };
  if (bytes !== undefined) request.withUsageBody = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { ok: true, request };
}
