import { createParser, type EventSourceMessage, type EventSourceParser } from "eventsource-parser";
import type { ReportedUsage } from "../load/store.js";

/** What a stretch of response body told us. */
export interface ResponseProgress {
  /** Generated tokens seen (one per SSE event that carries output). */
  generated: number;
  /**
   * Set on the one stretch where the first token arrived: the first SSE event carrying
   * output (not a role-only delta, not a keep-alive comment), or the first byte of any
   * other response (a JSON body is sent whole, after generation ended).
   */
  firstToken?: true;
  /** The engine's own token counts, when it reported them. */
  usage?: ReportedUsage;
  /** Set when the engine reported an error inside the stream. */
  error?: string;
}

type JsonObject = { [key: string]: unknown };
const isObject = (value: unknown): value is JsonObject => typeof value === "object" && value !== null && !Array.isArray(value);

function readUsage(body: JsonObject): ReportedUsage | undefined {
  const usage = body["usage"];
  if (!isObject(usage)) return undefined;
  const prompt = usage["prompt_tokens"];
  const completion = usage["completion_tokens"];
  if (typeof prompt !== "number" || typeof completion !== "number") return undefined;
  const details = usage["prompt_tokens_details"];
  const cached = isObject(details) ? details["cached_tokens"] : undefined;
  return typeof cached === "number"
    ? { promptTokens: prompt, completionTokens: completion, cachedTokens: cached }
    : { promptTokens: prompt, completionTokens: completion };
}

function readError(body: JsonObject): string | undefined {
  const error = body["error"];
  if (error === undefined || error === null) return undefined;
  if (isObject(error) && typeof error["message"] === "string") return error["message"];
  return JSON.stringify(error);
}

const OUTPUT_FIELDS = ["content", "reasoning_content", "reasoning"] as const;

/** True when a streamed choice carries generated output (text, reasoning or tool-call deltas). */
function carriesOutput(choice: unknown): boolean {
  if (!isObject(choice)) return false;
  if (typeof choice["text"] === "string" && choice["text"].length > 0) return true;
  const delta = choice["delta"];
  if (!isObject(delta)) return false;
  // Engines differ in which they leave empty or null beside the other (content "" next to reasoning).
  for (const key of OUTPUT_FIELDS) {
    const text = delta[key];
    if (typeof text === "string" && text.length > 0) return true;
  }
  return Array.isArray(delta["tool_calls"]) && delta["tool_calls"].length > 0;
}

/**
 * Scans an SSE response as it streams: each event is parsed on its own (never the whole
 * body), and any chunk boundary is fine — the decoder keeps split UTF-8 characters and the
 * parser keeps split events until they complete.
 */
class StreamScanner {
  private readonly decoder = new TextDecoder();
  private readonly parser: EventSourceParser;
  private progress: ResponseProgress = { generated: 0 };
  private outputSeen = false;

  constructor() {
    this.parser = createParser({ onEvent: (event) => this.onEvent(event) });
  }

  push(chunk: Uint8Array): ResponseProgress {
    this.parser.feed(this.decoder.decode(chunk, { stream: true }));
    return this.take();
  }

  end(): ResponseProgress {
    this.parser.feed(this.decoder.decode());
    this.parser.reset({ consume: true });
    return this.take();
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
    if (!isObject(body)) return;
    const usage = readUsage(body);
    if (usage !== undefined) this.progress.usage = usage;
    const error = event.event === "error" ? (readError(body) ?? "error event") : readError(body);
    if (error !== undefined) this.progress.error = error;
    const choices = body["choices"];
    if (Array.isArray(choices) && choices.some(carriesOutput)) {
      this.progress.generated += 1;
      if (!this.outputSeen) {
        this.outputSeen = true;
        this.progress.firstToken = true;
      }
    }
  }
}

/** Keeps a plain JSON response (bounded) and reads its `usage` once, at the end. */
class JsonScanner {
  private readonly chunks: Uint8Array[] = [];
  private size = 0;

  constructor(private readonly maxBytes: number) {}

  push(chunk: Uint8Array): ResponseProgress {
    const first = this.size === 0 && chunk.length > 0;
    this.size += chunk.length;
    if (this.size <= this.maxBytes) this.chunks.push(chunk);
    return first ? { generated: 0, firstToken: true } : { generated: 0 };
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
    const usage = readUsage(body);
    return usage === undefined ? { generated: 0 } : { generated: 0, usage };
  }
}

export interface ResponseScanner {
  push(chunk: Uint8Array): ResponseProgress;
  end(): ResponseProgress;
}

/** A body we cannot read: its first byte is all it tells us. */
class OpaqueScanner {
  private started = false;

  push(chunk: Uint8Array): ResponseProgress {
    if (this.started || chunk.length === 0) return { generated: 0 };
    this.started = true;
    return { generated: 0, firstToken: true };
  }

  end(): ResponseProgress {
    return { generated: 0 };
  }
}

/** Picks the scanner for a response by its content type. */
export function scannerFor(contentType: string | undefined, maxJsonBytes: number): ResponseScanner {
  const type = (contentType ?? "").toLowerCase();
  if (type.startsWith("text/event-stream")) return new StreamScanner();
  if (type.includes("json")) return new JsonScanner(maxJsonBytes);
  return new OpaqueScanner();
}
