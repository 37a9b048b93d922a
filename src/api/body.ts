import type { IncomingMessage } from "node:http";

/** Why a request body could not be read as JSON; the message is shown to the caller. */
export class BodyError extends Error {
  override readonly name = "BodyError";
}

/**
 * The request body parsed as JSON, refusing bodies over `limit` bytes before buffering them:
 * the write API takes tiny payloads, and an unbounded read would let a caller exhaust memory.
 */
export async function readJson(request: IncomingMessage, limit: number): Promise<unknown> {
  const declared = Number(request.headers["content-length"] ?? 0);
  if (declared > limit) throw new BodyError(`body is larger than ${limit} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    const buffer = chunk as Buffer;
    size += buffer.length;
    if (size > limit) throw new BodyError(`body is larger than ${limit} bytes`);
    chunks.push(buffer);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new BodyError(text.trim() === "" ? "body is empty; a JSON object is expected" : "body is not valid JSON");
  }
}
