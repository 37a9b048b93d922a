import { countTextTokens } from "./tokens.js";

/** The two generation APIs the simulator serves. */
export type Endpoint = "chat" | "completion";

/** What the simulator needs from a generation request body. */
export interface GenerationRequest {
  readonly endpoint: Endpoint;
  readonly model: string;
  readonly stream: boolean;
  /** `stream_options.include_usage`: send a final usage chunk before `[DONE]`. */
  readonly includeUsage: boolean;
  /** Prompt tokens of each choice: one for chat, one per prompt for a batched completion. */
  readonly promptTokens: readonly number[];
  /** `max_completion_tokens` / `max_tokens` as sent, before the engine applies its cap. */
  readonly maxTokens: number | undefined;
}

/** A request the simulator refuses; carries the HTTP status and the parameter at fault. */
export class RequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
  ) {
    super(message);
    this.name = "RequestError";
  }
}

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Parses and validates a `/v1/chat/completions` or `/v1/completions` body and counts its prompt
 * with o200k. Throws {@link RequestError} (400) naming the problem, as vLLM does.
 */
export function parseGenerationRequest(endpoint: Endpoint, body: string): GenerationRequest {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    throw new RequestError(400, "request body is not valid JSON");
  }
  if (!isObject(json)) throw new RequestError(400, "request body must be a JSON object");

  const model = json.model;
  if (typeof model !== "string" || model === "") {
    throw new RequestError(400, "`model` is required and must be a non-empty string", "model");
  }
  const stream = optionalBoolean(json, "stream") ?? false;
  const streamOptions = json.stream_options;
  const includeUsage = isObject(streamOptions) && streamOptions.include_usage === true;
  // Chat prefers the newer name; the legacy completions API only has max_tokens.
  const maxTokens =
    endpoint === "chat"
      ? (optionalTokenLimit(json, "max_completion_tokens") ?? optionalTokenLimit(json, "max_tokens"))
      : optionalTokenLimit(json, "max_tokens");
  const promptTokens =
    endpoint === "chat" ? [chatPromptTokens(json.messages)] : completionPromptTokens(json.prompt);
  return { endpoint, model, stream, includeUsage, promptTokens, maxTokens };
}

function optionalBoolean(json: JsonObject, field: string): boolean | undefined {
  const value = json[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "boolean") throw new RequestError(400, `\`${field}\` must be a boolean`, field);
  return value;
}

function optionalTokenLimit(json: JsonObject, field: string): number | undefined {
  const value = json[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1) {
    throw new RequestError(400, `\`${field}\` must be an integer >= 1`, field);
  }
  return value;
}

/**
 * Chat prompt size: the sum of the o200k counts of every message's text (a string content, or
 * each `text` part of an array content). Real engines add chat-template tokens on top; the
 * simulator does not, so tests can compute the expected number from the messages alone.
 */
function chatPromptTokens(messages: unknown): number {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new RequestError(400, "`messages` must be a non-empty array", "messages");
  }
  let tokens = 0;
  for (const message of messages) {
    if (!isObject(message)) throw new RequestError(400, "each message must be an object", "messages");
    tokens += contentTokens(message.content);
  }
  return tokens;
}

function contentTokens(content: unknown): number {
  // Assistant messages carrying only tool calls have no content.
  if (content === undefined || content === null) return 0;
  if (typeof content === "string") return countTextTokens(content);
  if (!Array.isArray(content)) {
    throw new RequestError(400, "message `content` must be a string or an array of parts", "messages");
  }
  let tokens = 0;
  for (const part of content) {
    if (isObject(part) && typeof part.text === "string") tokens += countTextTokens(part.text);
  }
  return tokens;
}

/**
 * Completion prompt sizes, one per prompt: a string, an array of strings, an array of token ids,
 * or an array of token-id arrays (ids are counted exactly, as the engine would see them).
 */
function completionPromptTokens(prompt: unknown): number[] {
  if (typeof prompt === "string") return [countTextTokens(prompt)];
  if (!Array.isArray(prompt) || prompt.length === 0) {
    throw new RequestError(400, "`prompt` must be a string, or a non-empty array of strings or token ids", "prompt");
  }
  if (prompt.every(isTokenId)) return [prompt.length];
  if (prompt.every((p): p is string => typeof p === "string")) return prompt.map(countTextTokens);
  if (prompt.every((p): p is unknown[] => Array.isArray(p) && p.length > 0 && p.every(isTokenId))) {
    return prompt.map((ids) => ids.length);
  }
  throw new RequestError(400, "`prompt` mixes types or holds an invalid token id", "prompt");
}

function isTokenId(value: unknown): boolean {
  return typeof value === "number" && Number.isInteger(value) && value >= 0;
}
