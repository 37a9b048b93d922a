import { bodilessRequest, type InferenceRequest, type ParseResult } from "../../request.js";
import { isObject, modelOf, pushJson, readJsonObject, RequestError, toolDefinitions, type Json, type JsonObject } from "../json.js";

/** Blocks a tool result or a document may hold: these do not nest further, so no body can recurse deeply here. */
type Depth = "message" | "nested";

function text(value: Json | undefined, field: string, into: InferenceRequest): void {
  if (value === undefined || value === null) return;
  if (typeof value !== "string") throw new RequestError(`'${field}' must be a string`);
  into.texts.push(value);
}

/** A string, or an array of content blocks (null or absent where `optional`). */
function blocks(value: Json | undefined, field: string, into: InferenceRequest, depth: Depth, optional: boolean): void {
  if (typeof value === "string") into.texts.push(value);
  else if (Array.isArray(value)) value.forEach((item, i) => block(item, `${field}[${i}]`, into, depth));
  else if (!optional || (value !== undefined && value !== null)) {
    throw new RequestError(`'${field}' must be a string or an array of content blocks`);
  }
}

/**
 * A document: plain text (or content blocks) is counted as text; a PDF (base64, URL or file) is
 * not decoded here, so it is priced as one page's image (the engine's `usage` settles the rest).
 */
function document(part: JsonObject, field: string, into: InferenceRequest): void {
  text(part["title"], `${field}.title`, into);
  text(part["context"], `${field}.context`, into);
  const source = part["source"];
  if (!isObject(source)) throw new RequestError(`'${field}.source' must be an object`);
  if (source["type"] === "text") text(source["data"], `${field}.source.data`, into);
  else if (source["type"] === "content") blocks(source["content"], `${field}.source.content`, into, "nested", false);
  else into.images += 1;
}

/**
 * One content block. Text, thinking, tool calls (name and input as JSON text), tool results and
 * documents are counted as text; images by the configured estimate. A block of a kind not listed
 * here counts its `text`, if it has one.
 */
function block(part: Json, field: string, into: InferenceRequest, depth: Depth): void {
  if (!isObject(part)) throw new RequestError(`'${field}' must be an object`);
  const type = part["type"];
  if (typeof type !== "string") throw new RequestError(`'${field}.type' must be a string`);
  switch (type) {
    case "image":
      into.images += 1;
      return;
    case "document":
      if (depth === "message") return document(part, field, into);
      break;
    case "thinking":
      return text(part["thinking"], `${field}.thinking`, into);
    case "redacted_thinking":
      return; // encrypted: nothing to count
    case "tool_use":
    case "server_tool_use":
      if (depth !== "message") break;
      text(part["name"], `${field}.name`, into);
      if (part["input"] !== undefined) pushJson(part["input"], `${field}.input`, into.texts);
      return;
    case "tool_result":
      if (depth === "message") return blocks(part["content"], `${field}.content`, into, "nested", true);
      break;
    case "search_result":
      if (depth !== "message") break;
      text(part["title"], `${field}.title`, into);
      return blocks(part["content"], `${field}.content`, into, "nested", true);
  }
  text(part["text"], `${field}.text`, into);
}

/** `system`: a string or text blocks, one turn of the template. */
function system(body: JsonObject, into: InferenceRequest): void {
  const value = body["system"];
  if (value === undefined || value === null) return;
  if (typeof value !== "string" && !Array.isArray(value)) throw new RequestError("'system' must be a string or an array of text blocks");
  into.messages += 1;
  blocks(value, "system", into, "nested", false);
}

function messages(body: JsonObject, into: InferenceRequest): void {
  const list = body["messages"];
  if (!Array.isArray(list)) throw new RequestError("'messages' must be an array");
  list.forEach((message, i) => {
    if (!isObject(message)) throw new RequestError(`'messages[${i}]' must be an object`);
    const role = message["role"];
    if (role !== undefined && typeof role !== "string") throw new RequestError(`'messages[${i}].role' must be a string`);
    into.messages += 1;
    blocks(message["content"], `messages[${i}].content`, into, "message", false);
  });
}


/**
 * Parses a Messages API body: `model`, `stream`, and the prompt in the order the model reads it —
 * tools, then system, then the messages (so prefix affinity sees the shared head first).
 */
export function parseMessagesRequest(path: string, body: Buffer | undefined): ParseResult {
  if (body === undefined || body.length === 0) return { ok: false, message: `${path} needs a JSON body` };
  const read = readJsonObject(body);
  if (!read.ok) return read;
  const model = modelOf(read.body);
  if (!model.ok) return model;
  const request = bodilessRequest();
  request.model = model.model;
  request.stream = read.body["stream"] === true;
  try {
    toolDefinitions(read.body, request.texts);
    system(read.body, request);
    messages(read.body, request);
  } catch (error) {
    if (error instanceof RequestError) return { ok: false, message: error.message };
    throw error;
  }
  return { ok: true, request };
}
