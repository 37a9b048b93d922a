import type { ServerHttp2Stream } from "node:http2";

/** grpc-js does not expose a call's HTTP/2 stream; it sits on the innermost intercepting call. */
export function http2StreamOf(call: object): ServerHttp2Stream | undefined {
  let inner: unknown = (call as { call?: unknown }).call;
  for (let depth = 0; typeof inner === "object" && inner !== null && depth < 8; depth++) {
    const stream = (inner as { stream?: ServerHttp2Stream }).stream;
    if (stream?.session !== undefined) return stream;
    inner = (inner as { nextCall?: unknown }).nextCall;
  }
  return undefined;
}

/** Time a finished call's stream has to close by itself (its trailers flushed, Envoy's reset read). */
const LINGER_MS = 1000;

/**
 * Frees a finished call's HTTP/2 stream if it has not gone by itself. Envoy resets every ext_proc
 * stream it is done with by RST_STREAM(NO_ERROR); on NO_ERROR Node frees a stream only once its
 * readable side has been read to the end, and grpc-js stops reading a call it has finished, so a
 * stream with a message left unread would stay, and keep its connection from ever closing.
 */
export function freeWhenDone(stream: ServerHttp2Stream | undefined): void {
  if (stream === undefined) return;
  setTimeout(() => {
    if (!stream.destroyed) stream.destroy();
  }, LINGER_MS).unref();
}
