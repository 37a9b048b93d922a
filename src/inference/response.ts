import { createParser, type EventSourceMessage, type EventSourceParser } from "eventsource-parser";
import type { ReportedUsage } from "../load/store.js";
import { outputTokens } from "./tokens.js";

/** What a stretch of response body told us. */
export interface ResponseProgress {
  /** Generated tokens seen: each SSE event's output counted (o200k), at least one an event with output. */
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
  /** Set when the engine sent a `usage` that is no sane token count: it is ignored, and this says why. */
  rejectedUsage?: string;
}

/** The most tokens one request may count: anything above (or not a whole number) is not a real count. */
export const MAX_TOKENS_PER_REQUEST = 10_000_000;

/** Why a reported token count is unusable, or undefined when it is fine (absent counts are checked by the caller). */
function badCount(field: string, value: unknown): string | undefined {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > MAX_TOKENS_PER_REQUEST) {
    return `${field} ${String(value).slice(0, 40)} is not a whole number of tokens between 0 and ${MAX_TOKENS_PER_REQUEST}`;
  }
  return undefined;
}

type JsonObject = { [key: string]: unknown };
const isObject = (value: unknown): value is JsonObject => typeof value === "object" && value !== null && !Array.isArray(value);

/**
 * `usage` as chat and completions report it (prompt/completion) or as the Responses API does
 * (input/output); a string when it is there but not a sane count (it is then ignored).
 */
function readUsage(holder: JsonObject): ReportedUsage | string | undefined {
  const usage = holder["usage"];
  if (!isObject(usage)) return undefined;
  const [promptField, prompt] = "prompt_tokens" in usage ? ["usage.prompt_tokens", usage["prompt_tokens"]] : ["usage.input_tokens", usage["input_tokens"]];
  const [completionField, completion] =
    "completion_tokens" in usage ? ["usage.completion_tokens", usage["completion_tokens"]] : ["usage.output_tokens", usage["output_tokens"]];
  if (prompt === undefined || prompt === null || completion === undefined || completion === null) return undefined;
  const details = usage["prompt_tokens_details"] ?? usage["input_tokens_details"];
  const cached = isObject(details) ? details["cached_tokens"] : undefined;
  const problem =
    badCount(promptField, prompt) ?? badCount(completionField, completion) ?? (typeof cached === "number" ? badCount("cached_tokens", cached) : undefined);
  if (problem !== undefined) return problem;
  const counts = { promptTokens: prompt as number, completionTokens: completion as number };
  return typeof cached === "number" ? { ...counts, cachedTokens: cached } : counts;
}

/** Puts a `usage` read from the response on the progress: the counts, or why they were ignored. */
function noteUsage(progress: ResponseProgress, usage: ReportedUsage | string | undefined): void {
  if (typeof usage === "string") progress.rejectedUsage ??= usage;
  else if (usage !== undefined) progress.usage = usage;
}

/** Largest SSE event read, in characters; a longer one is skipped (an engine's events are a few hundred bytes, a final usage chunk a few KiB). */
const MAX_EVENT_CHARS = 4 << 20;

/** Longest error text kept from an engine's error body. */
const MAX_ERROR_TEXT = 200;

/** The engine's error, as text for the log; never throws (an error nested deeper than the stack allows is named so). */
function readError(body: JsonObject): string | undefined {
  const error = body["error"];
  if (error === undefined || error === null) return undefined;
  if (isObject(error) && typeof error["message"] === "string") return error["message"].slice(0, MAX_ERROR_TEXT);
  if (typeof error === "string") return error.slice(0, MAX_ERROR_TEXT);
  try {
    return (JSON.stringify(error) ?? "error").slice(0, MAX_ERROR_TEXT);
  } catch {
    return "error (nested too deeply to show)";
  }
}

const OUTPUT_FIELDS = ["content", "reasoning_content", "reasoning"] as const;

/**
 * The output a streamed chat or completions choice carries (text, reasoning, tool-call name and
 * arguments), "" for a tool-call delta with no text yet, undefined when it carries none (a
 * role-only delta).
 */
function choiceOutput(choice: unknown): string | undefined {
  if (!isObject(choice)) return undefined;
  if (typeof choice["text"] === "string" && choice["text"].length > 0) return choice["text"];
  const delta = choice["delta"];
  if (!isObject(delta)) return undefined;
  let output: string | undefined;
  // Engines differ in which they leave empty or null beside the other (content "" next to reasoning).
  for (const key of OUTPUT_FIELDS) {
    const text = delta[key];
    if (typeof text === "string" && text.length > 0) output = (output ?? "") + text;
  }
  const calls = delta["tool_calls"];
  if (!Array.isArray(calls) || calls.length === 0) return output;
  output ??= "";
  for (const call of calls) {
    const fn = isObject(call) ? call["function"] : undefined;
    if (!isObject(fn)) continue;
    if (typeof fn["name"] === "string") output += fn["name"];
    if (typeof fn["arguments"] === "string") output += fn["arguments"];
  }
  return output;
}

/** Responses API stream events that carry generated output in `delta`. */
const RESPONSES_OUTPUT_EVENTS = new Set([
  "response.output_text.delta",
  "response.refusal.delta",
  "response.reasoning_text.delta",
  "response.reasoning_summary_text.delta",
  "response.function_call_arguments.delta",
]);
/** Responses API stream events that end the response, carrying it (and its `usage`). */
const RESPONSES_END_EVENTS = new Set(["response.completed", "response.incomplete", "response.failed"]);

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
  /** The parser stopped on an event longer than MAX_EVENT_CHARS. */
  private overflowed = false;

  constructor() {
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
    const type = body["type"];
    if (typeof type === "string" && (type.startsWith("response.") || type === "error")) this.onResponsesEvent(type, body);
    else this.onChoicesEvent(event, body);
  }

  /** Chat and completions: `choices` deltas, and `usage` (final chunk, or every chunk with continuous usage). */
  private onChoicesEvent(event: EventSourceMessage, body: JsonObject): void {
    noteUsage(this.progress, readUsage(body));
    const error = event.event === "error" ? (readError(body) ?? "error event") : readError(body);
    if (error !== undefined) this.progress.error = error;
    const choices = body["choices"];
    if (!Array.isArray(choices)) return;
    for (const choice of choices) this.output(choiceOutput(choice));
  }

  /** Responses API: typed events; output in `*.delta` events, usage in the response that ends it. */
  private onResponsesEvent(type: string, body: JsonObject): void {
    if (type === "error") {
      this.progress.error = typeof body["message"] === "string" ? body["message"].slice(0, MAX_ERROR_TEXT) : "error event";
      return;
    }
    const delta = body["delta"];
    if (RESPONSES_OUTPUT_EVENTS.has(type) && typeof delta === "string") {
      this.output(delta);
      return;
    }
    const response = body["response"];
    if (!RESPONSES_END_EVENTS.has(type) || !isObject(response)) return;
    noteUsage(this.progress, readUsage(response));
    if (type === "response.failed") this.progress.error = readError(response) ?? "response failed";
  }

  /**
   * One choice's (or event's) output: its tokens, by o200k, at least one. Engines send several
   * tokens in one event (speculative decoding, or outputs merged when they fall behind), so
   * counting events would fall short; the engine's own `usage` settles the count at the end.
   */
  private output(text: string | undefined): void {
    if (text === undefined) return;
    this.progress.generated += Math.max(1, outputTokens(text));
    if (!this.outputSeen) {
      this.outputSeen = true;
      this.progress.firstToken = true;
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
    const progress: ResponseProgress = { generated: 0 };
    noteUsage(progress, readUsage(body));
    return progress;
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
