import type { ServerDuplexStream } from "@grpc/grpc-js";

/**
 * Replies to a stream whose reader may be slow: Envoy stops reading the ext_proc stream when its
 * own client reads slowly. Once a reply is buffered past the stream's high-water mark, the stream
 * is not read until its replies drain, so HTTP/2 flow control holds Envoy's next messages back
 * instead of the sidecar taking them in and buffering every echo without bound.
 */
export function flowControlled<Request, Reply>(call: ServerDuplexStream<Request, Reply>): { write(reply: Reply): void } {
  let paused = false;
  const resume = (): void => {
    paused = false;
    call.resume();
  };
  return {
    write(reply) {
      if (call.write(reply) || paused) return;
      paused = true;
      call.pause();
      call.once("drain", resume);
    },
  };
}
