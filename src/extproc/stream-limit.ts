import { status, type ServerDuplexStream } from "@grpc/grpc-js";
import type { Logger } from "../log.js";

/** Refusals closer together than this are one burst, logged once. */
const BURST_GAP_MS = 10_000;

/**
 * Caps the ext_proc streams open at once. A stream over the cap ends at once with
 * RESOURCE_EXHAUSTED, before any of its messages is read, so nothing is parsed or reserved for it.
 */
export class StreamLimit {
  private open = 0;
  private lastRefusalAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly max: number,
    private readonly log: Logger,
  ) {}

  /**
   * Takes a place for a new stream: gives back the release to call when the stream ends (calling
   * it again does nothing), or undefined after ending a stream over the limit.
   */
  admit<Request, Reply>(call: ServerDuplexStream<Request, Reply>): (() => void) | undefined {
    if (this.open >= this.max) {
      this.refuse(call);
      return undefined;
    }
    this.open += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.open -= 1;
    };
  }

  private refuse<Request, Reply>(call: ServerDuplexStream<Request, Reply>): void {
    const details = `metadata-center: ${this.max} ext_proc streams are open, the limit extproc.maxStreams`;
    // grpc-js ends a stream with the status of an error emitted on it.
    call.emit("error", { code: status.RESOURCE_EXHAUSTED, details });
    const now = performance.now();
    if (now - this.lastRefusalAt > BURST_GAP_MS) {
      this.log.warn({ limit: this.max, key: "extproc.maxStreams" }, "ext_proc streams over the limit refused with RESOURCE_EXHAUSTED");
    }
    this.lastRefusalAt = now;
  }
}
