import { createParser, type EventSourceMessage, type EventSourceParser } from "eventsource-parser";
import type { ReportedUsage } from "../load/store.js";

/** What a stretch of response body told us. */
export interface ResponseProgress {
  /** Generated tokens seen: each SSE event's output counted (o200k), at least one an event with output. */
  generated: number;
  /**
   * Set on the one stretch where the first token arrived: `event`, the first SSE event carrying
   * output (not a role-only delta, not a keep-alive comment); `body`, the first byte of any other
   * response (a JSON body is sent whole, after generation ended, so its time is not a TTFT).
   */
  firstToken?: "event" | "body";
  /** The engine's own token counts, when it reported them. */
  usage?: ReportedUsage;
  /** Set when the engine reported an error inside the stream. */
  error?: string;
  /** Set when the engine sent a `usage` that is no sane token count: it is ignored, and this says why. */
  rejectedUsage?: string;
}

/** Counts a stretch of generated text; given by the caller, so that reading responses pins no tokenizer (the parsing thread loads the adapters too). */
export type OutputCounter = (text: string) => number;

export interface ResponseScanner {
  push(chunk: Uint8Array): ResponseProgress;
  end(): ResponseProgress;
}

/** The most tokens one request may count: anything above (or not a whole number) is not a real count. */
export const MAX_TOKENS_PER_REQUEST = 10_000_000;

/** Why a reported token count is unusable, or undefined when it is fine (absent counts are checked by the caller). */
export function countProblem(field: string, value: unknown): string | undefined {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > MAX_TOKENS_PER_REQUEST) {
    return `${field} ${String(value).slice(0, 40)} is not a whole number of tokens between 0 and ${MAX_TOKENS_PER_REQUEST}`;
  }
  return undefined;
}

export type JsonObject = { [key: string]: unknown };
export const isObject = (value: unknown): value is JsonObject => typeof value === "object" && value !== null && !Array.isArray(value);

/** Longest error text kept from an engine's error body. */
export const MAX_ERROR_TEXT = 200;

/** Where an API shape's reader puts what it read from one event (or one JSON body). */
export interface ProgressSink {
  /** Generated output: its tokens are counted, and the first one ends prefill. */
  output(text: string): void;
  /** The first token has been seen, though this event's output is not text to count. */
  started(): void;
  /** The engine's counts, or why the ones it sent are ignored. */
  usage(usage: ReportedUsage | string | undefined): void;
  error(message: string): void;
}

/**
 * What one API shape reads from its responses. One per response, so it may carry state from event
 * to event (a count given at the start, completed at the end).
 */
export interface ResponseReader {
  /** One SSE event whose data is a JSON object; `name` is its `event:` field. */
  event(name: string | undefined, body: JsonObject, into: ProgressSink): void;
  /** A whole (non-streamed) JSON response. */
  json(body: JsonObject, into: ProgressSink): void;
}

/** Largest SSE event read, in characters; a longer one is skipped (an engine's events are a few hundred bytes, a final usage chunk a few KiB). */
const MAX_EVENT_CHARS = 4 << 20;

/**
 * Scans an SSE response as it streams: each event is parsed on its own (never the whole
 * body), and any chunk boundary is fine — the decoder keeps split UTF-8 characters and the
 * parser keeps split events until they complete. The reader says what each event means.
 */
class StreamScanner implements ProgressSink {
  private readonly decoder = new TextDecoder();
  private readonly parser: EventSourceParser;
  private progress: ResponseProgress = { generated: 0 };
  private outputSeen = false;
  /** The parser stopped on an event longer than MAX_EVENT_CHARS. */
  private overflowed = false;

  constructor(
    private readonly reader: ResponseReader,
    private readonly outputTokens: OutputCounter,
  ) {
    this.parser = createParser({
      maxBufferSize: MAX_EVENT_CHARS,
      onEvent: (event) => this.onEvent(event),
      onError: (error) => {
        if (error.type === "max-buffer-size-exceeded") this.overflowed = true;
      },
    });
  }

  push(chunk: Uint8Array): ResponseProgress {
    this.parser.feed(this.decoder.decode(chunk, { stream: true }));
    // An event that never ends is not held without bound: it is dropped unread (its bytes are
    // echoed like all others) and scanning starts again with what comes next.
    if (this.overflowed) {
      this.overflowed = false;
      this.parser.reset();
    }
    return this.take();
  }

  end(): ResponseProgress {
    this.parser.feed(this.decoder.decode());
    this.parser.reset({ consume: true });
    return this.take();
  }

  /**
   * One event's output: its tokens, by o200k, at least one. Engines send several tokens in one
   * event (speculative decoding, or outputs merged when they fall behind), so counting events
   * would fall short; the engine's own `usage` settles the count at the end.
   */
  output(text: string): void {
    this.progress.generated += Math.max(1, this.outputTokens(text));
    this.started();
  }

  started(): void {
    if (this.outputSeen) return;
    this.outputSeen = true;
    this.progress.firstToken = "event";
  }

  usage(usage: ReportedUsage | string | undefined): void {
    noteUsage(this.progress, usage);
  }

  error(message: string): void {
    this.progress.error = message;
  }

  private take(): ResponseProgress {
    const progress = this.progress;
    this.progress = { generated: 0 };
    return progress;
  }

  private onEvent(event: EventSourceMessage): void {
    if (event.data === "[DONE]") return;
    let body: unknown;
    try {
      body = JSON.parse(event.data);
    } catch {
      return; // not ours to judge: the bytes are echoed unchanged either way
    }
    if (isObject(body)) this.reader.event(event.event, body, this);
  }
}

/** Puts a `usage` read from the response on the progress: the counts, or why they were ignored. */
function noteUsage(progress: ResponseProgress, usage: ReportedUsage | string | undefined): void {
  if (typeof usage === "string") progress.rejectedUsage ??= usage;
  else if (usage !== undefined) progress.usage = usage;
}

/** Keeps a plain JSON response (bounded) and reads it once, at the end. */
class JsonScanner {
  private readonly chunks: Uint8Array[] = [];
  private size = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly reader: ResponseReader,
  ) {}

  push(chunk: Uint8Array): ResponseProgress {
    const first = this.size === 0 && chunk.length > 0;
    this.size += chunk.length;
    if (this.size <= this.maxBytes) this.chunks.push(chunk);
    return first ? { generated: 0, firstToken: "body" } : { generated: 0 };
  }

  end(): ResponseProgress {
    if (this.size > this.maxBytes || this.size === 0) return { generated: 0 };
    let body: unknown;
    try {
      body = JSON.parse(Buffer.concat(this.chunks).toString("utf8"));
    } catch {
      return { generated: 0 };
    }
    if (!isObject(body)) return { generated: 0 };
    const progress: ResponseProgress = { generated: 0 };
    // Generation is over when the body arrives: only its counts (and errors) are read.
    this.reader.json(body, {
      output: () => undefined,
      started: () => undefined,
      usage: (usage) => noteUsage(progress, usage),
      error: (message) => (progress.error = message),
    });
    return progress;
  }
}

/** A body we cannot read: its first byte is all it tells us. */
class OpaqueScanner {
  private started = false;

  push(chunk: Uint8Array): ResponseProgress {
    if (this.started || chunk.length === 0) return { generated: 0 };
    this.started = true;
    return { generated: 0, firstToken: "body" };
  }

  end(): ResponseProgress {
    return { generated: 0 };
  }
}

/** Picks the scanner for a response by its content type; `reader` is the API shape's own. */
export function scannerFor(contentType: string | undefined, maxJsonBytes: number, reader: ResponseReader, outputTokens: OutputCounter): ResponseScanner {
  const type = (contentType ?? "").toLowerCase();
  if (type.startsWith("text/event-stream")) return new StreamScanner(reader, outputTokens);
  if (type.includes("json")) return new JsonScanner(maxJsonBytes, reader);
  return new OpaqueScanner();
}
