// What every API shape's request parsing shares: a JSON body read strictly, and the errors that
// name the field at fault (each becomes a 400 in that shape's error body).

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export const isObject = (value: Json | undefined): value is JsonObject => typeof value === "object" && value !== null && !Array.isArray(value);

/** A prompt field of the wrong type or shape: the request is refused with this message. */
export class RequestError extends Error {}

/** Counts a structure sent as JSON text to the model (tool definitions, tool-call arguments) by that text. */
export function pushJson(value: Json, field: string, into: string[]): void {
  if (typeof value === "string") {
    into.push(value);
    return;
  }
  let text: string;
  try {
    text = JSON.stringify(value);
  } catch {
    // Only a structure nested deeper than the stack allows gets here.
    throw new RequestError(`'${field}' is nested too deeply`);
  }
  into.push(text);
}

/** `tools`, in every shape: each definition (name, description, schema) reaches the model as JSON text. */
export function toolDefinitions(body: JsonObject, into: string[]): void {
  const list = body["tools"];
  if (list === undefined || list === null) return;
  if (!Array.isArray(list)) throw new RequestError("'tools' must be an array");
  list.forEach((tool, i) => {
    if (!isObject(tool)) throw new RequestError(`'tools[${i}]' must be an object`);
    pushJson(tool, `tools[${i}]`, into);
  });
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

export type JsonBody = { ok: true; body: JsonObject; text: string } | { ok: false; message: string };

/** The body as one JSON object, decoded strictly: lenient decoding would count U+FFFD where the engine sees something else (or refuses). */
export function readJsonObject(bytes: Buffer): JsonBody {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    return { ok: false, message: "request body is not valid UTF-8" };
  }
  let parsed: Json;
  try {
    // V8's JSON.parse is not recursive: any nesting depth parses without exhausting the stack.
    parsed = JSON.parse(text) as Json;
  } catch (error) {
    return { ok: false, message: `request body is not valid JSON: ${(error as Error).message}` };
  }
  if (!isObject(parsed)) return { ok: false, message: "request body must be a JSON object" };
  return { ok: true, body: parsed, text };
}

/** The `model` field: a non-empty string, or why not. */
export function modelOf(body: JsonObject): { ok: true; model: string } | { ok: false; message: string } {
  const model = body["model"];
  if (typeof model === "string" && model.length > 0) return { ok: true, model };
  return { ok: false, message: model === undefined ? "request has no 'model'" : "'model' must be a non-empty string" };
}
