import type { ReportedUsage } from "../../../load/store.js";
import { countProblem, isObject, MAX_ERROR_TEXT, MAX_TOKENS_PER_REQUEST, type JsonObject, type ProgressSink, type ResponseReader } from "../../response.js";

/** The counts a Messages response reports: the prompt in three parts (Anthropic counts cache reads and writes apart from `input_tokens`) and the output. */
const COUNT_FIELDS = ["input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens"] as const;
type Counts = Partial<Record<(typeof COUNT_FIELDS)[number], number>>;

/** The text a content block carries when it starts: a tool call's name, or text sent with the block itself. */
function startOutput(block: JsonObject): string | undefined {
  for (const key of ["name", "text", "thinking"] as const) {
    const value = block[key];
    if (typeof value === "string" && value.length > 0) return value;
  }
  return undefined;
}

/** The generated text of a `content_block_delta`, by delta kind; undefined for kinds that carry none to count (signatures, citations). */
function deltaOutput(delta: JsonObject): string | undefined {
  const field = delta["type"] === "text_delta" ? "text" : delta["type"] === "input_json_delta" ? "partial_json" : delta["type"] === "thinking_delta" ? "thinking" : undefined;
  const value = field === undefined ? undefined : delta[field];
  return typeof value === "string" ? value : undefined;
}

function errorText(body: JsonObject): string {
  const error = body["error"];
  if (isObject(error) && typeof error["message"] === "string") return error["message"].slice(0, MAX_ERROR_TEXT);
  if (isObject(error) && typeof error["type"] === "string") return error["type"].slice(0, MAX_ERROR_TEXT);
  return "error event";
}

/**
 * Reads one Messages API response. A stream gives the prompt's counts in `message_start` and the
 * cumulative output in each `message_delta` (which may restate the prompt's): the counts are kept
 * across events and reported whole each time they change. The first token is the first
 * `content_block_delta` (or a block that starts with output already, as a tool call's name).
 */
export class MessagesResponse implements ResponseReader {
  private readonly counts: Counts = {};
  private rejected = false;

  event(name: string | undefined, body: JsonObject, into: ProgressSink): void {
    const type = typeof body["type"] === "string" ? body["type"] : name;
    switch (type) {
      case "message_start": {
        const message = body["message"];
        if (isObject(message)) this.usage(message["usage"], into);
        return;
      }
      case "content_block_start": {
        const block = body["content_block"];
        const output = isObject(block) ? startOutput(block) : undefined;
        if (output !== undefined) into.output(output);
        return;
      }
      case "content_block_delta": {
        const delta = body["delta"];
        const output = isObject(delta) ? deltaOutput(delta) : undefined;
        if (output !== undefined) into.output(output);
        else into.started();
        return;
      }
      case "message_delta":
        return this.usage(body["usage"], into);
      case "error":
        return into.error(errorText(body));
    }
  }

  json(body: JsonObject, into: ProgressSink): void {
    this.usage(body["usage"], into);
  }

  /** Takes the counts a `usage` gives (absent or null ones keep what was known) and reports them once prompt and output are both known. */
  private usage(usage: unknown, into: ProgressSink): void {
    if (!isObject(usage) || this.rejected) return;
    for (const field of COUNT_FIELDS) {
      const value = usage[field];
      if (value === undefined || value === null) continue;
      const problem = countProblem(`usage.${field}`, value);
      if (problem !== undefined) return this.reject(problem, into);
      this.counts[field] = value as number;
    }
    const { input_tokens: input, cache_creation_input_tokens: written = 0, cache_read_input_tokens: read, output_tokens: output } = this.counts;
    if (input === undefined || output === undefined) return;
    const prompt = input + written + (read ?? 0);
    if (prompt > MAX_TOKENS_PER_REQUEST) return this.reject(`usage input_tokens with cache tokens ${prompt} is more than ${MAX_TOKENS_PER_REQUEST}`, into);
    const counts: ReportedUsage = { promptTokens: prompt, completionTokens: output };
    into.usage(read === undefined ? counts : { ...counts, cachedTokens: read });
  }

  /** A count that is not sane discredits the response's usage from then on: a later event cannot complete it. */
  private reject(problem: string, into: ProgressSink): void {
    this.rejected = true;
    into.usage(problem);
  }
}
