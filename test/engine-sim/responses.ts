import { randomUUID } from "node:crypto";
import type { Endpoint } from "./request.js";

// Response bodies shaped as vLLM's OpenAI-compatible server writes them.

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** "length": the request's own max_tokens was reached; "stop": the answer ended on its own. */
export type FinishReason = "length" | "stop";

/** Fields every body and chunk of one response shares. */
export interface Envelope {
  readonly id: string;
  readonly created: number;
  readonly model: string;
}

export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: number };
}

export function newEnvelope(endpoint: Endpoint, model: string): Envelope {
  const prefix = endpoint === "chat" ? "chatcmpl-" : "cmpl-";
  return {
    id: prefix + randomUUID().replaceAll("-", ""),
    created: Math.floor(Date.now() / 1000),
    model,
  };
}

export function usageOf(promptTokens: number, completionTokens: number): Usage {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
  };
}

/** Opening fields in OpenAI's order: id, object, created, model. */
function head(envelope: Envelope, object: string): object {
  return { id: envelope.id, object, created: envelope.created, model: envelope.model };
}

function chunkObject(endpoint: Endpoint): string {
  // vLLM's completion chunks reuse the non-streaming object name.
  return endpoint === "chat" ? "chat.completion.chunk" : "text_completion";
}

/** vLLM opens a chat stream with an assistant-role delta, sent together with the first token. */
export function roleChunk(envelope: Envelope, index: number): object {
  return {
    ...head(envelope, "chat.completion.chunk"),
    choices: [
      { index, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null },
    ],
  };
}

/** One generated token of one choice; the last one carries the finish reason, as in vLLM. */
export function tokenChunk(
  endpoint: Endpoint,
  envelope: Envelope,
  index: number,
  text: string,
  finishReason: FinishReason | null,
): object {
  const choice =
    endpoint === "chat"
      ? { index, delta: { content: text }, logprobs: null, finish_reason: finishReason, stop_reason: null }
      : { index, text, logprobs: null, finish_reason: finishReason, stop_reason: null };
  return { ...head(envelope, chunkObject(endpoint)), choices: [choice] };
}

/** The `stream_options.include_usage` chunk: no choices, only usage. */
export function usageChunk(endpoint: Endpoint, envelope: Envelope, usage: Usage): object {
  return { ...head(envelope, chunkObject(endpoint)), choices: [], usage };
}

/** A whole non-streaming response; `texts` holds one generated text per choice. */
export function completeBody(
  endpoint: Endpoint,
  envelope: Envelope,
  texts: readonly string[],
  finishReason: FinishReason,
  usage: Usage,
): object {
  const ending = { logprobs: null, finish_reason: finishReason, stop_reason: null };
  const choices = texts.map((text, index) =>
    endpoint === "chat"
      ? { index, message: { role: "assistant", content: text }, ...ending }
      : { index, text, ...ending },
  );
  return {
    ...head(envelope, endpoint === "chat" ? "chat.completion" : "text_completion"),
    choices,
    usage,
  };
}

/** Error types vLLM names after the Python OpenAI client's exception classes. */
const ERROR_TYPES: Readonly<Record<number, string>> = {
  400: "BadRequestError",
  404: "NotFoundError",
  405: "MethodNotAllowedError",
  429: "RateLimitError",
  500: "InternalServerError",
  503: "ServiceUnavailableError",
};

export function errorBody(status: number, message: string, param: string | null = null): ErrorBody {
  const type = ERROR_TYPES[status] ?? (status >= 500 ? "InternalServerError" : "BadRequestError");
  return { error: { message, type, param, code: status } };
}

export function modelList(models: readonly string[], created: number): object {
  return {
    object: "list",
    data: models.map((id) => ({ id, object: "model", created, owned_by: "vllm", root: id, parent: null })),
  };
}
