// How a downstream request body reaches Envoy's filter chain: as data frames whose boundaries
// mean nothing, ended in one of the two ways Envoy sees, or followed by trailers.
import { HeaderMap } from "./header-map.js";
import { mulberry32 } from "../support/random.js";

/** Fixed sizes (repeated cyclically), or seeded random sizes in [1, maxChunk]. */
export type Chunking = { sizes?: number[] } | { random: { seed: number; maxChunk?: number } };

/** "eos-on-last": the last data frame ends the stream (HTTP/2 clients); "empty-eos": an empty frame does (HTTP/1). */
export type Ending = "eos-on-last" | "empty-eos";

export type Frame = { kind: "data"; data: Buffer; endStream: boolean } | { kind: "trailers"; trailers: HeaderMap };


export function splitBody(body: Buffer, chunking: Chunking | undefined): Buffer[] {
  if (body.length === 0) return [];
  let nextSize: () => number;
  if (chunking !== undefined && "random" in chunking) {
    const random = mulberry32(chunking.random.seed);
    const max = Math.max(1, chunking.random.maxChunk ?? 64);
    nextSize = () => 1 + Math.floor(random() * max);
  } else {
    const sizes = chunking?.sizes ?? [];
    if (sizes.some((s) => !Number.isInteger(s) || s < 1)) throw new Error(`chunk sizes must be positive integers: ${sizes.join(",")}`);
    if (sizes.length === 0) return [body];
    let i = 0;
    nextSize = () => sizes[i++ % sizes.length] as number;
  }
  const chunks: Buffer[] = [];
  for (let offset = 0; offset < body.length; ) {
    const size = nextSize();
    chunks.push(body.subarray(offset, offset + size));
    offset += size;
  }
  return chunks;
}

/** A body known up front. end_of_stream goes on the headers iff there is no body and no trailers. */
export function fixedFrames(
  body: Buffer,
  trailers: HeaderMap | undefined,
  chunking: Chunking | undefined,
  ending: Ending,
): { headersEndStream: boolean; frames: Frame[] } {
  const chunks = splitBody(body, chunking);
  if (chunks.length === 0 && trailers === undefined) return { headersEndStream: true, frames: [] };
  const frames: Frame[] = chunks.map((data) => ({ kind: "data", data, endStream: false }));
  if (trailers !== undefined) {
    frames.push({ kind: "trailers", trailers });
  } else {
    const last = frames[frames.length - 1];
    if (ending === "eos-on-last" && last?.kind === "data") last.endStream = true;
    else frames.push({ kind: "data", data: Buffer.alloc(0), endStream: true });
  }
  return { headersEndStream: false, frames };
}

/** A body arriving over time (an HTTP/1 client): chunks as they come, then trailers or an empty end. */
export async function* streamedFrames(
  body: AsyncIterable<Buffer | string>,
  trailers: () => HeaderMap | undefined,
): AsyncGenerator<Frame> {
  for await (const chunk of body) {
    const data = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
    if (data.length > 0) yield { kind: "data", data, endStream: false };
  }
  const last = trailers();
  yield last !== undefined ? { kind: "trailers", trailers: last } : { kind: "data", data: Buffer.alloc(0), endStream: true };
}

export function trailersMap(trailers: Readonly<Record<string, string>> | undefined): HeaderMap | undefined {
  return trailers === undefined || Object.keys(trailers).length === 0 ? undefined : new HeaderMap(Object.entries(trailers));
}
