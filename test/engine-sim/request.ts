import { textTokens } from "./tokens.js";

/** The two generation APIs the simulator serves. */
export type Endpoint = "chat" | "completion";

/** What the simulator needs from a generation request body. */
export interface GenerationRequest {
  readonly endpoint: Endpoint;
  readonly model: string;
  readonly stream: boolean;
  /** `stream_options.include_usage`: send a final usage chunk before `[DONE]`. */
  readonly includeUsage: boolean;
  /** The prompt's token ids for each choice: one for chat, one per prompt for a batched completion. */
  readonly prompts: readonly (readonly number[])[];
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
  const prompts = endpoint === "chat" ? [chatPrompt(json.messages)] : completionPrompts(json.prompt);
  return { endpoint, model, stream, includeUsage, prompts, maxTokens };
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
 * Chat prompt: the o200k tokens of every message's text (a string content, or each `text` part of
 * an array content), in order. Real engines add chat-template tokens on top; the simulator does
 * not, so tests can compute the expected number from the messages alone.
 */
function chatPrompt(messages: unknown): number[] {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new RequestError(400, "`messages` must be a non-empty array", "messages");
  }
  const texts: string[] = [];
  for (const message of messages) {
    if (!isObject(message)) throw new RequestError(400, "each message must be an object", "messages");
    texts.push(...contentTexts(message.content));
  }
  return texts.flatMap((text) => textTokens(text));
}

function contentTexts(content: unknown): string[] {
  // Assistant messages carrying only tool calls have no content.
  if (content === undefined || content === null) return [];
  if (typeof content === "string") return [content];
  if (!Array.isArray(content)) {
    throw new RequestError(400, "message `content` must be a string or an array of parts", "messages");
  }
  return content.flatMap((part: unknown) => (isObject(part) && typeof part.text === "string" ? [part.text] : []));
}

/**
 * Completion prompts, one per choice: a string, an array of strings, an array of token ids, or an
 * array of token-id arrays (ids are taken as they are, as the engine would see them).
 */
function completionPrompts(prompt: unknown): number[][] {
  if (typeof prompt === "string") return [textTokens(prompt)];
  if (!Array.isArray(prompt) || prompt.length === 0) {
    throw new RequestError(400, "`prompt` must be a string, or a non-empty array of strings or token ids", "prompt");
  }
  if (prompt.every(isTokenId)) return [prompt];
  if (prompt.every((p): p is string => typeof p === "string")) return prompt.map(textTokens);
  if (prompt.every((p): p is number[] => Array.isArray(p) && p.length > 0 && p.every(isTokenId))) return prompt;
  throw new RequestError(400, "`prompt` mixes types or holds an invalid token id", "prompt");
}

function isTokenId(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 0;
}
