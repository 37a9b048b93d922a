// What Envoy's filter manager does around the ext_proc filter in one direction
// (source/common/http/filter_manager.cc): it holds headers, buffered data and trailers while the
// filter stops iteration, and resumes them when the filter continues or injects data.
import type { HeaderMap } from "./header-map.js";

/** The stage after the ext_proc filter: the router (request) or the downstream client (response). */
export interface StageSink {
  headers(headers: HeaderMap, endStream: boolean): void;
  data(chunk: Buffer, endStream: boolean): void;
  trailers(trailers: HeaderMap): void;
}

export type HeadersStatus = "Continue" | "StopIteration";
/** StopIterationAndWatermark behaves like StopIterationAndBuffer here: there is no flow control. */
export type DataStatus = "Continue" | "StopIterationAndBuffer" | "StopIterationNoBuffer";
export type TrailersStatus = "Continue" | "StopIteration";

export class ChainGate {
  private heldHeaders: HeaderMap | undefined;
  private headersContinued = false;
  /** Envoy's buffered_request_data_/buffered_response_data_: undefined until created. */
  private buffer: Buffer | undefined;
  private heldTrailers: HeaderMap | undefined;
  /** remoteDecodeComplete(): the filter has seen the end of this direction. */
  private complete = false;
  private stopped = false;

  constructor(private readonly next: StageSink) {}

  onHeaders(headers: HeaderMap, endStream: boolean, status: HeadersStatus): void {
    this.complete = endStream;
    if (status === "Continue") {
      this.headersContinued = true;
      this.next.headers(headers, endStream);
      return;
    }
    this.heldHeaders = headers;
    this.stopped = true;
  }

  /** `data` is what is left in the filter's buffer after the filter ran (drained = empty). */
  onData(data: Buffer, endStream: boolean, status: DataStatus): void {
    if (endStream) this.complete = true;
    if (status === "Continue") {
      if (this.stopped) {
        this.addBufferedData(data);
        this.continue();
      } else if (data.length > 0 || endStream) {
        this.next.data(data, endStream);
      }
      return;
    }
    this.stopped = true;
    if (status === "StopIterationAndBuffer") {
      this.addBufferedData(data);
    } else if (this.complete && this.heldTrailers === undefined && this.buffer === undefined) {
      // A zero-byte end of stream must still resume the chain later (filter_manager.cc).
      this.buffer = Buffer.alloc(0);
    }
  }

  onTrailers(trailers: HeaderMap, status: TrailersStatus): void {
    this.complete = true;
    this.heldTrailers = trailers;
    if (status === "Continue") {
      this.continue();
    } else {
      this.stopped = true;
    }
  }

  bufferedData(): Buffer | undefined {
    return this.buffer;
  }

  addBufferedData(data: Buffer): void {
    this.buffer = this.buffer === undefined ? data : Buffer.concat([this.buffer, data]);
  }

  /** modifyDecodingBuffer/modifyEncodingBuffer: replaces what is buffered. */
  replaceBufferedData(data: Buffer): void {
    this.buffer = data;
  }

  /** injectDecodedDataToFilterChain: data goes on at once, releasing held headers first. */
  inject(data: Buffer, endStream: boolean): void {
    if (!this.headersContinued) this.releaseHeaders(false);
    this.next.data(data, endStream);
  }

  /** commonContinue(): headers, then buffered data, then trailers. */
  continue(): void {
    this.stopped = false;
    if (!this.headersContinued) {
      this.releaseHeaders(this.complete && this.buffer === undefined && this.heldTrailers === undefined);
    }
    const trailers = this.heldTrailers;
    if (this.buffer !== undefined) {
      const data = this.buffer;
      const endStream = this.complete && trailers === undefined;
      this.buffer = undefined;
      if (data.length > 0 || endStream) this.next.data(data, endStream);
    }
    if (trailers !== undefined) {
      this.heldTrailers = undefined;
      this.next.trailers(trailers);
    }
  }

  private releaseHeaders(endStream: boolean): void {
    this.headersContinued = true;
    const headers = this.heldHeaders;
    this.heldHeaders = undefined;
    if (headers !== undefined) this.next.headers(headers, endStream);
  }
}
