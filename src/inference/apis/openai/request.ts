import { approximateTokens } from "../../estimate.js";
import { bodilessRequest, type InferenceRequest, type ParseResult } from "../../request.js";
import { isObject, modelOf, pushJson, readJsonObject, RequestError, toolDefinitions, type Json, type JsonObject } from "../json.js";

/**
 * Content parts of chat and Responses messages: text counted by the tokenizer, images and
 * audio by the configured estimate; other part types (files, refusals without text) add nothing.
 */
function contentPart(part: Json, field: string, into: InferenceRequest): void {
  if (!isObject(part)) throw new RequestError(`'${field}' must be an object`);
  const type = part["type"];
  if (type !== undefined && typeof type !== "string") throw new RequestError(`'${field}.type' must be a string`);
  const text = part["text"];
  if (text !== undefined && typeof text !== "string") throw new RequestError(`'${field}.text' must be a string`);
  if (typeof text === "string") into.texts.push(text);
  if (type === "image_url" || type === "input_image" || type === "image") into.images += 1;
  else if (type === "input_audio" || type === "audio_url") into.audios += 1;
}

function content(value: Json | undefined, field: string, into: InferenceRequest): void {
  if (typeof value === "string") into.texts.push(value);
  else if (Array.isArray(value)) value.forEach((part, j) => contentPart(part, `${field}[${j}]`, into));
  else if (value !== null && value !== undefined) {
    throw new RequestError(`'${field}' must be a string, an array of content parts or null`);
  }
}


/** Reads a chat prompt: every role's content, assistant tool calls, tool definitions. */
function chatPrompt(body: JsonObject, into: InferenceRequest): void {
  const messages = body["messages"];
  if (!Array.isArray(messages)) throw new RequestError("'messages' must be an array");
  messages.forEach((message, i) => {
    if (!isObject(message)) throw new RequestError(`'messages[${i}]' must be an object`);
    into.messages += 1;
    content(message["content"], `messages[${i}].content`, into);
    const role = message["role"];
    if (role !== undefined && typeof role !== "string") throw new RequestError(`'messages[${i}].role' must be a string`);
    const calls = message["tool_calls"];
    if (calls === undefined || calls === null) return;
    if (!Array.isArray(calls)) throw new RequestError(`'messages[${i}].tool_calls' must be an array`);
    calls.forEach((call, j) => {
      const field = `messages[${i}].tool_calls[${j}]`;
      if (!isObject(call) || !isObject(call["function"])) throw new RequestError(`'${field}' must be an object with a 'function'`);
      const fn = call["function"];
      if (typeof fn["name"] === "string") into.texts.push(fn["name"]);
      if (fn["arguments"] !== undefined) pushJson(fn["arguments"], `${field}.function.arguments`, into.texts);
    });
  });
  toolDefinitions(body, into.texts);
}

/** The four prompt forms of completions and embeddings: a string, strings, token ids, arrays of token ids. */
function promptForms(value: Json | undefined, field: string, into: InferenceRequest): void {
  if (typeof value === "string") {
    into.texts.push(value);
    return;
  }
  if (!Array.isArray(value)) throw new RequestError(`'${field}' must be a string or an array`);
  value.forEach((item, i) => {
    if (typeof item === "string") into.texts.push(item);
    else if (typeof item === "number") into.tokenIds += 1;
    else if (Array.isArray(item) && item.every((id) => typeof id === "number")) into.tokenIds += item.length;
    else throw new RequestError(`'${field}[${i}]' must be a string, a token id or an array of token ids`);
  });
}

function completionPrompt(body: JsonObject, into: InferenceRequest): void {
  const prompt = body["prompt"];
  if (prompt === undefined || prompt === null) return;
  promptForms(prompt, "prompt", into);
}

function embeddingInput(body: JsonObject, into: InferenceRequest): void {
  promptForms(body["input"], "input", into);
}

/**
 * One Responses API input item: a message (string or parts), a function call (its
 * arguments are JSON text), or a function call's output.
 */
function responsesItem(item: Json, field: string, into: InferenceRequest): void {
  if (!isObject(item)) throw new RequestError(`'${field}' must be an object`);
  into.messages += 1;
  if (item["content"] !== undefined) content(item["content"], `${field}.content`, into);
  if (typeof item["name"] === "string") into.texts.push(item["name"]);
  if (item["arguments"] !== undefined) pushJson(item["arguments"], `${field}.arguments`, into.texts);
  if (item["output"] !== undefined) pushJson(item["output"], `${field}.output`, into.texts);
}

function responsesPrompt(body: JsonObject, into: InferenceRequest): void {
  const instructions = body["instructions"];
  if (typeof instructions === "string") {
    into.messages += 1;
    into.texts.push(instructions);
  } else if (instructions !== undefined && instructions !== null) throw new RequestError("'instructions' must be a string");
  const input = body["input"];
  if (typeof input === "string") {
    into.messages += 1;
    into.texts.push(input);
  } else if (Array.isArray(input)) input.forEach((item, i) => responsesItem(item, `input[${i}]`, into));
  else throw new RequestError("'input' must be a string or an array of items");
  toolDefinitions(body, into.texts);
}

const promptReaders: Record<string, (body: JsonObject, into: InferenceRequest) => void> = {
  "/v1/chat/completions": chatPrompt,
  "/v1/completions": completionPrompt,
  "/v1/embeddings": embeddingInput,
  "/v1/responses": responsesPrompt,
};

/** Paths of the OpenAI-style API: a body there is priced even when no reader knows its fields. */
const API_PREFIX = "/v1/";

const USAGE_OPTION = Buffer.from('"stream_options":{"include_usage":true}');
const COMMA = Buffer.from(",");

/** The index of the first byte at or after `from` that is not JSON whitespace. */
function skipSpace(bytes: Buffer, from: number): number {
  let at = from;
  while (at < bytes.length && (bytes[at] === 0x20 || bytes[at] === 0x0a || bytes[at] === 0x0d || bytes[at] === 0x09)) at++;
  return at;
}

/**
 * Adds `stream_options.include_usage: true`. Without `stream_options`, the option goes in after
 * the opening brace and every other byte goes on as sent: no re-serialising (which costs the pick
 * time in proportion to the body, and would round integers beyond 2^53). Otherwise the body is
 * written back; undefined for one too deeply nested for that (it then goes on unchanged).
 */
function bodyWithUsage(raw: Buffer, body: JsonObject, options: Json | undefined): Buffer | undefined {
  const open = skipSpace(raw, 0);
  // The body holds `model` and `stream` at least (or it would not be here): a comma always follows.
  if (options === undefined && raw[open] === 0x7b) return Buffer.concat([raw.subarray(0, open + 1), USAGE_OPTION, COMMA, raw.subarray(open + 1)]);
  try {
    return Buffer.from(JSON.stringify({ ...body, stream_options: { ...(isObject(options) ? options : {}), include_usage: true } }));
  } catch {
    return undefined;
  }
}

/**
 * Parses the whole request body once, at its end. A body on an API path without a prompt reader
 * routes by `model` and is priced by the estimate of its text; elsewhere (not the API) a body
 * routes by `model` with zero prompt tokens. `includeUsage` builds `withUsageBody` where it applies.
 */
export function parseOpenAiRequest(route: string, body: Buffer | undefined, includeUsage: boolean): ParseResult {
  // Own keys only: a path such as "__proto__" must not find what objects inherit.
  const readPrompt = Object.hasOwn(promptReaders, route) ? promptReaders[route] : undefined;
  const request = bodilessRequest();
  if (body === undefined || body.length === 0) {
    return readPrompt === undefined ? { ok: true, request } : { ok: false, message: `${route} needs a JSON body` };
  }
  const read = readJsonObject(body);
  if (!read.ok) return readPrompt === undefined ? { ok: true, request } : read;
  const parsed = read.body;
  const model = modelOf(parsed);
  if (model.ok) request.model = model.model;
  else if (readPrompt !== undefined) return model;
  request.stream = parsed["stream"] === true;
  if (readPrompt === undefined) {
    if (route.startsWith(API_PREFIX)) request.estimatedTokens = approximateTokens(read.text);
    return { ok: true, request };
  }
  try {
    readPrompt(parsed, request);
  } catch (error) {
    if (error instanceof RequestError) return { ok: false, message: error.message };
    throw error;
  }
  const options = parsed["stream_options"];
  const asksUsage = isObject(options) && options["include_usage"] === true;
  // stream_options belongs to these two: elsewhere an engine ignores it.
  const takesStreamOptions = request.stream && (route === "/v1/chat/completions" || route === "/v1/completions");
  request.asksUsage = takesStreamOptions && asksUsage;
  if (includeUsage && takesStreamOptions && !asksUsage) {
    const rewritten = bodyWithUsage(body, parsed, options);
    if (rewritten !== undefined) request.withUsageBody = rewritten;
  }
  return { ok: true, request };
}
