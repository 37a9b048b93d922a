/** What the picker needs to know about one OpenAI-style request. */
export interface InferenceRequest {
  /** The `model` field; undefined for paths that carry none (routed to the catch-all pool). */
  model: string | undefined;
  /** Prompt texts, in order; counted by the tokenizer as one text. */
  texts: string[];
  /** Prompt tokens given as token ids: counted exactly. */
  tokenIds: number;
  /** Chat messages, for the chat template's per-message overhead. */
  messages: number;
  stream: boolean;
}

export type ParseResult = { ok: true; request: InferenceRequest } | { ok: false; message: string };

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

const isObject = (value: Json | undefined): value is JsonObject =>
  typeof value === "object" && value !== null && !Array.isArray(value);

class RequestError extends Error {}

/** Reads the prompt of a chat request: message contents as strings or text parts. */
function chatPrompt(body: JsonObject, into: InferenceRequest): void {
  const messages = body["messages"];
  if (!Array.isArray(messages)) throw new RequestError("'messages' must be an array");
  messages.forEach((message, i) => {
    if (!isObject(message)) throw new RequestError(`'messages[${i}]' must be an object`);
    into.messages += 1;
    const content = message["content"];
    if (typeof content === "string") into.texts.push(content);
    else if (Array.isArray(content)) {
      content.forEach((part, j) => {
        if (!isObject(part)) throw new RequestError(`'messages[${i}].content[${j}]' must be an object`);
        const text = part["text"];
        if (typeof text === "string") into.texts.push(text);
      });
    } else if (content !== null && content !== undefined) {
      throw new RequestError(`'messages[${i}].content' must be a string, an array of content parts or null`);
    }
  });
}

/** Reads a completions prompt: a string, strings, token ids, or arrays of token ids. */
function completionPrompt(body: JsonObject, into: InferenceRequest): void {
  const prompt = body["prompt"];
  if (prompt === undefined || prompt === null) return;
  if (typeof prompt === "string") {
    into.texts.push(prompt);
    return;
  }
  if (!Array.isArray(prompt)) throw new RequestError("'prompt' must be a string or an array");
  prompt.forEach((item, i) => {
    if (typeof item === "string") into.texts.push(item);
    else if (typeof item === "number") into.tokenIds += 1;
    else if (Array.isArray(item) && item.every((id) => typeof id === "number")) into.tokenIds += item.length;
    else throw new RequestError(`'prompt[${i}]' must be a string, a token id or an array of token ids`);
  });
}

/** A request whose body the picker does not see: routed by headers, zero prompt tokens. */
export const bodilessRequest = (): InferenceRequest => ({ model: undefined, texts: [], tokenIds: 0, messages: 0, stream: false });

const promptReaders: Record<string, (body: JsonObject, into: InferenceRequest) => void> = {
  "/v1/chat/completions": chatPrompt,
  "/v1/completions": completionPrompt,
};

/**
 * Parses the whole request body once, at its end. Paths without a prompt reader still
 * route by `model` when the body has one, with zero prompt tokens.
 */
export function parseInferenceRequest(path: string, body: Buffer | undefined): ParseResult {
  const route = path.split("?", 1)[0] ?? path;
  const readPrompt = promptReaders[route];
  const request = bodilessRequest();
  if (body === undefined || body.length === 0) {
    return readPrompt === undefined ? { ok: true, request } : { ok: false, message: `${route} needs a JSON body` };
  }
  let parsed: Json;
  try {
    parsed = JSON.parse(body.toString("utf8")) as Json;
  } catch (error) {
    if (readPrompt === undefined) return { ok: true, request };
    return { ok: false, message: `request body is not valid JSON: ${(error as Error).message}` };
  }
  if (!isObject(parsed)) {
    if (readPrompt === undefined) return { ok: true, request };
    return { ok: false, message: "request body must be a JSON object" };
  }
  const model = parsed["model"];
  if (typeof model === "string" && model.length > 0) request.model = model;
  else if (readPrompt !== undefined) {
    return { ok: false, message: model === undefined ? "request has no 'model'" : "'model' must be a non-empty string" };
  }
  request.stream = parsed["stream"] === true;
  try {
    readPrompt?.(parsed, request);
  } catch (error) {
    if (error instanceof RequestError) return { ok: false, message: error.message };
    throw error;
  }
  return { ok: true, request };
}
