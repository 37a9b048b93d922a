// One direction (request = decoding, response = encoding) of Envoy's ext_proc filter: the state
// machine of source/extensions/filters/http/ext_proc/processor_state.cc together with the
// per-direction halves of Filter::onHeaders/onData/onTrailers in ext_proc.cc.
import {
  type BodyMutation,
  type BodyResponse,
  type CommonResponse,
  CommonResponse_ResponseStatus,
  type HeadersResponse,
  type ProcessingRequest,
  type TrailersResponse,
} from "../../src/gen/envoy/service/ext_proc/v3/external_processor.js";
import type { ChainGate, DataStatus, TrailersStatus } from "./chain-gate.js";
import type { BodyMode, FilterConfig } from "./config.js";
import { applyHeaderMutation, type HeaderMap } from "./header-map.js";

export type Direction = "request" | "response";

/** Which reply the direction is waiting for; Idle = none. */
export type CallbackState =
  | "Idle"
  | "HeadersCallback"
  | "BufferedBodyCallback"
  | "StreamedBodyCallback"
  | "TrailersCallback";

/** A reply Envoy refuses: spurious ones are out of order, the others carry a bad mutation. */
export interface ProcessingError {
  kind: "spurious-message" | "mutation-rejected";
  message: string;
}

/** Exactly one of the request-side fields of a ProcessingRequest. */
export type RequestPart = Partial<
  Pick<
    ProcessingRequest,
    "requestHeaders" | "responseHeaders" | "requestBody" | "responseBody" | "requestTrailers" | "responseTrailers"
  >
>;

/** What a direction needs from the filter that owns both directions and the gRPC stream. */
export interface ProcessorHost {
  readonly config: FilterConfig;
  readonly processingComplete: boolean;
  write(part: RequestPart): void;
  onMessageTimeout(): void;
  violation(message: string): void;
}

interface QueuedChunk {
  data: Buffer;
  endStream: boolean;
}

/** The largest echo chunk the endpoint-picker protocol asks servers to send. */
export const MAX_ECHO_CHUNK = 62_000;

const spurious = (message = "spurious message"): ProcessingError => ({ kind: "spurious-message", message });

/** MutationUtils::applyBodyMutations: body replaces, clear_body empties, anything else keeps. */
function applyBodyMutation(mutation: BodyMutation, data: Buffer): Buffer {
  if (mutation.body !== undefined) return Buffer.from(mutation.body);
  if (mutation.clearBody === true) return Buffer.alloc(0);
  return data;
}

export class ProcessorState {
  callbackState: CallbackState = "Idle";
  bodyMode: BodyMode;
  private sendTrailers: boolean;
  private paused = false;
  private noBody = false;
  private completeBodyAvailable = false;
  private bodyReceived = false;
  private bodyReplaced = false;
  private trailersAvailable = false;
  private trailersSentToServer = false;
  /** Envoy's headers_: the held headers a reply may still mutate. */
  private headers: HeaderMap | undefined;
  private trailers: HeaderMap | undefined;
  /** STREAMED: chunks sent and not yet answered, FIFO. */
  private readonly chunkQueue: QueuedChunk[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** FULL_DUPLEX_STREAMED bookkeeping, for reporting lost bytes. */
  readonly duplex = { sent: 0, echoed: 0, awaitingEndOfStream: false };

  constructor(
    readonly direction: Direction,
    private readonly host: ProcessorHost,
    private readonly gate: ChainGate,
  ) {
    const config = host.config;
    this.bodyMode = direction === "request" ? config.requestBodyMode : config.responseBodyMode;
    const trailerMode = direction === "request" ? config.requestTrailerMode : config.responseTrailerMode;
    this.sendTrailers = trailerMode === "SEND";
  }

  // ---- events from the HTTP stream -------------------------------------------------------

  /** Filter::onHeaders once the stream is open: send the headers and hold them. */
  onHeaders(headers: HeaderMap, endStream: boolean): void {
    if (endStream) this.completeBodyAvailable = true;
    this.headers = headers;
    this.noBody = endStream;
    this.write("Headers", { headers: headers.toProto(), endOfStream: endStream, attributes: {} });
    this.onStartProcessorCall("HeadersCallback");
    this.paused = true;
  }

  /** Filter::onData. Returns the status and what stays in the chain's buffer. */
  onData(data: Buffer, endStream: boolean): { status: DataStatus; data: Buffer } {
    this.bodyReceived = true;
    if (endStream) this.completeBodyAvailable = true;
    if (this.bodyReplaced) return { status: "Continue", data: Buffer.alloc(0) };
    if (this.host.processingComplete) return { status: "Continue", data };
    if (this.callbackState === "HeadersCallback" && !this.bodyGoesOutBeforeHeadersReply()) {
      // Held in the chain until the headers reply (StopIterationAndBuffer/AndWatermark).
      this.paused = true;
      return { status: "StopIterationAndBuffer", data };
    }
    switch (this.bodyMode) {
      case "BUFFERED":
        return this.onDataBuffered(data, endStream);
      case "STREAMED":
      case "FULL_DUPLEX_STREAMED":
        return this.onDataStreamed(data, endStream);
      case "NONE":
        return { status: "Continue", data };
    }
  }

  /** Filter::onTrailers. */
  onTrailers(trailers: HeaderMap): TrailersStatus {
    if (this.host.processingComplete) return "Continue";
    const bodyDelivered = this.completeBodyAvailable;
    this.completeBodyAvailable = true;
    this.trailers = trailers;
    this.trailersAvailable = true;
    if (this.callbackState !== "Idle" && this.bodyMode !== "FULL_DUPLEX_STREAMED") {
      this.paused = true;
      return "StopIteration";
    }
    const buffered = this.gate.bufferedData();
    if (!bodyDelivered && buffered !== undefined && this.bodyMode === "BUFFERED") {
      // Trailers prove the body is complete: send what was buffered, trailers follow later.
      this.sendBody(buffered, false, "BufferedBodyCallback");
      this.paused = true;
      return "StopIteration";
    }
    if (!this.sendTrailers) return "Continue";
    this.sendTrailersMessage();
    this.paused = true;
    return "StopIteration";
  }

  // ---- replies from the server ----------------------------------------------------------

  handleHeadersResponse(response: HeadersResponse): ProcessingError | undefined {
    if (this.callbackState !== "HeadersCallback") return spurious();
    const common = response.response;
    const replacing = common?.status === CommonResponse_ResponseStatus.CONTINUE_AND_REPLACE;
    if (common?.headerMutation !== undefined) {
      const error = this.applyHeaderMutation(common);
      if (error !== undefined) return error;
    }
    const next = this.callbackStateAfterHeadersReply(replacing);
    this.onFinishProcessorCall(next);

    if (replacing) {
      this.replaceMessage(common?.bodyMutation);
    } else if (this.noBody) {
      // Nothing more to come in this direction.
    } else if (this.completeBodyAvailable && this.bodyMode !== "NONE") {
      if (next !== "Idle") {
        // Body chunks are out already; headers stay held until their replies come back.
        this.sendBufferedDataInStreamedMode(!this.trailersAvailable);
        return undefined;
      }
      const buffered = this.gate.bufferedData();
      if (buffered !== undefined) {
        // The whole body arrived while Envoy waited: it goes out in one message, in any mode.
        this.sendBody(buffered, !this.trailersAvailable, "BufferedBodyCallback");
        return undefined;
      }
    } else if (this.bodyMode === "BUFFERED") {
      return undefined; // keep holding the headers until the body is complete
    } else if (this.bodyMode === "STREAMED") {
      this.sendBufferedDataInStreamedMode(false);
      this.continueIfNecessary();
      return undefined;
    } else if (this.bodyMode === "FULL_DUPLEX_STREAMED") {
      this.continueIfNecessary();
      return undefined;
    }
    if (this.sendTrailers && this.trailersAvailable) {
      this.sendTrailersMessage();
      return undefined;
    }
    this.headers = undefined;
    this.continueIfNecessary();
    return undefined;
  }

  handleBodyResponse(response: BodyResponse): ProcessingError | undefined {
    const common = response.response;
    let outcome: boolean | ProcessingError;
    switch (this.callbackState) {
      case "BufferedBodyCallback":
        outcome = this.onBufferedBodyReply(common);
        break;
      case "StreamedBodyCallback":
        outcome = this.onStreamedBodyReply(common);
        break;
      default:
        return spurious();
    }
    if (typeof outcome !== "boolean") return outcome;
    this.finalizeBodyResponse(outcome);
    return undefined;
  }

  handleTrailersResponse(response: TrailersResponse): ProcessingError | undefined {
    // In FULL_DUPLEX_STREAMED the trailers reply may overtake the last body reply.
    const expected =
      this.callbackState === "TrailersCallback" ||
      (this.bodyMode === "FULL_DUPLEX_STREAMED" && this.trailersSentToServer);
    if (!expected || this.trailers === undefined) return spurious();
    if (response.headerMutation !== undefined) {
      const error = applyHeaderMutation(response.headerMutation, this.trailers, {
        replacingMessage: false,
        removeContentLength: false,
      });
      if (error !== undefined) return { kind: "mutation-rejected", message: error };
    }
    this.trailers = undefined;
    this.onFinishProcessorCall("Idle");
    this.continueIfNecessary();
    return undefined;
  }

  /** Whether this body reply is the last one the direction needs (stream close optimization). */
  isLastBodyResponse(response: BodyResponse): boolean {
    switch (this.bodyMode) {
      case "STREAMED":
        return this.chunkQueue[0]?.endStream ?? false;
      case "FULL_DUPLEX_STREAMED":
        return response.response?.bodyMutation?.streamedResponse?.endOfStream ?? false;
      default:
        return false;
    }
  }

  /** Content-length cannot be kept when the body may change size chunk by chunk. */
  shouldRemoveContentLength(): boolean {
    return this.bodyMode === "STREAMED" || this.bodyMode === "FULL_DUPLEX_STREAMED";
  }

  wantsNoMoreAfterHeaders(): boolean {
    return this.noBody || (this.bodyMode === "NONE" && !this.sendTrailers);
  }

  /** After the stream ended or failed: let unanswered STREAMED data through and resume. */
  clearAsyncState(): void {
    this.onFinishProcessorCall("Idle");
    if (this.chunkQueue.length > 0) {
      const leftover = this.chunkQueue.splice(0);
      const data = Buffer.concat(leftover.map((c) => c.data));
      this.gate.inject(data, leftover[leftover.length - 1]?.endStream ?? false);
    }
    this.continueIfNecessary();
  }

  onFinishProcessorCall(next: CallbackState): void {
    this.stopMessageTimer();
    this.callbackState = next;
  }

  stopMessageTimer(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  describe(): string {
    const duplex =
      this.bodyMode === "FULL_DUPLEX_STREAMED"
        ? `, ${this.duplex.sent} body bytes sent, ${this.duplex.echoed} echoed${this.duplex.awaitingEndOfStream ? ", end_of_stream not echoed" : ""}`
        : "";
    return `${this.direction} ${this.bodyMode}: ${this.callbackState === "Idle" ? "no reply pending" : `waiting for ${this.callbackState} reply`}${duplex}`;
  }

  // ---- internals ------------------------------------------------------------------------

  private bodyGoesOutBeforeHeadersReply(): boolean {
    return (
      this.bodyMode === "FULL_DUPLEX_STREAMED" ||
      (this.bodyMode === "STREAMED" && this.host.config.sendBodyWithoutWaitingForHeaderResponse)
    );
  }

  /** Filter::handleDataBufferedMode. */
  private onDataBuffered(data: Buffer, endStream: boolean): { status: DataStatus; data: Buffer } {
    this.paused = true;
    if (!endStream) return { status: "StopIterationAndBuffer", data };
    this.gate.addBufferedData(data);
    this.sendBody(this.gate.bufferedData() ?? data, true, "BufferedBodyCallback");
    return { status: "StopIterationNoBuffer", data: Buffer.alloc(0) };
  }

  /** Filter::handleDataStreamedModeBase: STREAMED queues a copy, FULL_DUPLEX keeps none. */
  private onDataStreamed(data: Buffer, endStream: boolean): { status: DataStatus; data: Buffer } {
    const waitingForHeaders = this.callbackState === "HeadersCallback";
    if (this.bodyMode === "STREAMED") this.chunkQueue.push({ data, endStream });
    this.sendBody(data, endStream, waitingForHeaders ? "HeadersCallback" : "StreamedBodyCallback");
    if (endStream || waitingForHeaders) {
      this.paused = true;
      return { status: "StopIterationNoBuffer", data: Buffer.alloc(0) };
    }
    return { status: "Continue", data: Buffer.alloc(0) };
  }

  private callbackStateAfterHeadersReply(replacing: boolean): CallbackState {
    if (replacing) return "Idle";
    if (
      this.bodyMode === "STREAMED" &&
      this.host.config.sendBodyWithoutWaitingForHeaderResponse &&
      this.chunkQueue.length > 0
    ) {
      return "StreamedBodyCallback";
    }
    if (this.bodyMode === "FULL_DUPLEX_STREAMED") {
      if (this.bodyReceived) return "StreamedBodyCallback";
      if (this.trailersAvailable) return "TrailersCallback";
    }
    return "Idle";
  }

  /** CONTINUE_AND_REPLACE: replace the body if asked, and send nothing more this direction. */
  private replaceMessage(mutation: BodyMutation | undefined): void {
    if (mutation !== undefined) {
      this.headers?.remove("content-length");
      this.bodyReplaced = true;
      this.gate.replaceBufferedData(applyBodyMutation(mutation, this.gate.bufferedData() ?? Buffer.alloc(0)));
    }
    this.chunkQueue.length = 0;
    this.bodyMode = "NONE";
    this.sendTrailers = false;
  }

  private sendBufferedDataInStreamedMode(endStream: boolean): void {
    const buffered = this.gate.bufferedData();
    if (buffered === undefined || buffered.length === 0) return;
    this.gate.replaceBufferedData(Buffer.alloc(0));
    this.chunkQueue.push({ data: buffered, endStream });
    this.sendBody(buffered, endStream, "StreamedBodyCallback");
  }

  private onBufferedBodyReply(common: CommonResponse | undefined): boolean | ProcessingError {
    if (common?.headerMutation !== undefined && this.headers !== undefined) {
      const error = this.applyHeaderMutation(common);
      if (error !== undefined) return error;
    }
    const mutation = common?.bodyMutation;
    if (mutation !== undefined) {
      const declared = this.headers?.first("content-length");
      const replacementSize = mutation.body?.length ?? 0;
      if (declared !== undefined && /^\d+$/.test(declared) && Number(declared) !== replacementSize) {
        return { kind: "mutation-rejected", message: "mismatch between content length and the length of the mutated body" };
      }
      this.gate.replaceBufferedData(applyBodyMutation(mutation, this.gate.bufferedData() ?? Buffer.alloc(0)));
    }
    this.onFinishProcessorCall("Idle");
    return true;
  }

  private onStreamedBodyReply(common: CommonResponse | undefined): boolean | ProcessingError {
    const streamed = common?.bodyMutation?.streamedResponse;
    if (streamed !== undefined) {
      if (this.bodyMode !== "FULL_DUPLEX_STREAMED") {
        return spurious("spurious message: streamed_response is received while body_mode_ is not FULL_DUPLEX_STREAMED");
      }
      return this.onDuplexEcho(Buffer.from(streamed.body), streamed.endOfStream);
    }
    if (this.bodyMode === "FULL_DUPLEX_STREAMED") {
      return spurious("spurious message: Normal body mutation response is received while body_mode_ is FULL_DUPLEX_STREAMED");
    }
    const chunk = this.chunkQueue.shift();
    if (chunk === undefined) return spurious();
    const data = common?.bodyMutation !== undefined ? applyBodyMutation(common.bodyMutation, chunk.data) : chunk.data;
    if (data.length > 0) this.gate.inject(data, chunk.endStream);
    this.onFinishProcessorCall(this.chunkQueue.length === 0 ? "Idle" : this.callbackState);
    return chunk.endStream;
  }

  /** ProcessorState::handleDuplexStreamedBodyResponse: only echoed bytes go on. */
  private onDuplexEcho(body: Buffer, endOfStream: boolean): boolean {
    if (body.length > MAX_ECHO_CHUNK) {
      this.host.violation(`${this.direction} body echo of ${body.length} bytes exceeds ${MAX_ECHO_CHUNK}`);
    }
    this.duplex.echoed += body.length;
    if (endOfStream) this.duplex.awaitingEndOfStream = false;
    if (body.length > 0) this.gate.inject(body, endOfStream);
    this.onFinishProcessorCall(endOfStream ? "Idle" : "StreamedBodyCallback");
    return endOfStream;
  }

  private finalizeBodyResponse(shouldContinue: boolean): void {
    this.headers = undefined;
    if (this.sendTrailers && this.trailersAvailable && this.chunkQueue.length === 0) {
      this.sendTrailersMessage();
      return;
    }
    if (shouldContinue || (this.trailersAvailable && this.chunkQueue.length === 0)) {
      this.continueIfNecessary();
    }
  }

  private applyHeaderMutation(common: CommonResponse): ProcessingError | undefined {
    if (common.headerMutation === undefined || this.headers === undefined) return undefined;
    const error = applyHeaderMutation(common.headerMutation, this.headers, {
      replacingMessage: common.status === CommonResponse_ResponseStatus.CONTINUE_AND_REPLACE,
      removeContentLength: this.shouldRemoveContentLength(),
    });
    return error === undefined ? undefined : { kind: "mutation-rejected", message: error };
  }

  private continueIfNecessary(): void {
    if (!this.paused) return;
    this.paused = false;
    this.gate.continue();
  }

  private sendBody(data: Buffer, endStream: boolean, next: CallbackState): void {
    if (this.bodyMode === "FULL_DUPLEX_STREAMED") {
      this.duplex.sent += data.length;
      this.duplex.awaitingEndOfStream = true;
    }
    this.write("Body", { body: data, endOfStream: endStream });
    this.onStartProcessorCall(next);
  }

  /** Filter::sendTrailers: at most once per direction. */
  private sendTrailersMessage(): void {
    if (this.trailersSentToServer || this.trailers === undefined) return;
    this.trailersSentToServer = true;
    this.write("Trailers", { trailers: this.trailers.toProto() });
    this.onStartProcessorCall(this.callbackState === "Idle" ? "TrailersCallback" : this.callbackState);
  }

  private write<K extends "Headers" | "Body" | "Trailers">(kind: K, value: NonNullable<RequestPart[`request${K}`]>): void {
    this.host.write({ [`${this.direction}${kind}`]: value });
  }

  /** No per-message timer in FULL_DUPLEX_STREAMED: replies may legitimately take long. */
  private onStartProcessorCall(next: CallbackState): void {
    this.callbackState = next;
    if (this.bodyMode === "FULL_DUPLEX_STREAMED") return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.host.onMessageTimeout(), this.host.config.messageTimeoutMs);
  }
}
