// Envoy's ext_proc filter for one HTTP stream: both directions, the gRPC stream to the
// processor, reply dispatch and the error paths of source/extensions/filters/http/ext_proc/ext_proc.cc
// (failure_mode_allow false, disable_immediate_response false, allow_mode_override false).
import { status as GrpcStatus } from "@grpc/grpc-js";
import {
  type HeaderMutation,
  ProcessingRequest,
  type ProcessingResponse,
} from "../../src/gen/envoy/service/ext_proc/v3/external_processor.js";
import type { ChainGate } from "./chain-gate.js";
import { bodyModeToProto, type FilterConfig } from "./config.js";
import type { ExtProcChannel, ProcessStatus, ProcessStream } from "./grpc-channel.js";
import type { HeaderMap } from "./header-map.js";
import { type ProcessingError, type ProcessorHost, ProcessorState, type RequestPart } from "./processor-state.js";

export type FailureKind = ProcessingError["kind"] | "grpc-error" | "message-timeout" | "body-lost" | "stalled";

/** dynamic metadata / metadata_context.filter_metadata: namespace -> Struct as a plain object. */
export type MetadataNamespaces = Record<string, Record<string, unknown>>;

export interface LocalReply {
  status: number;
  body: Buffer;
  /** %RESPONSE_CODE_DETAILS% */
  details: string;
  /** ImmediateResponse.headers, applied to the reply's headers. */
  headerMutation?: HeaderMutation;
  fromImmediateResponse: boolean;
}

export type LogDirection = "sent" | "received" | "event";

/** What the filter needs from the HTTP stream around it and from the exchange's report. */
export interface FilterCallbacks {
  sendLocalReply(reply: LocalReply): void;
  fail(kind: FailureKind, message: string): void;
  violation(message: string): void;
  log(direction: LogDirection, summary: string, message?: ProcessingRequest | ProcessingResponse): void;
  mergeDynamicMetadata(namespace: string, value: Record<string, unknown>): void;
}

type ResponseCase =
  | "requestHeaders"
  | "responseHeaders"
  | "requestBody"
  | "responseBody"
  | "requestTrailers"
  | "responseTrailers"
  | "immediateResponse";

/** In field-number order: if a buggy server sets several, protobuf keeps the last on the wire. */
const RESPONSE_CASES: readonly ResponseCase[] = [
  "requestHeaders",
  "responseHeaders",
  "requestBody",
  "responseBody",
  "requestTrailers",
  "responseTrailers",
  "immediateResponse",
];

/** StringUtil::replaceAllEmptySpace, applied to local reply details. */
const detailsOf = (text: string): string => text.replace(/\s/g, "_");

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);

export class ExtProcFilter implements ProcessorHost {
  readonly decoding: ProcessorState;
  readonly encoding: ProcessorState;
  processingComplete = false;
  private call: ProcessStream | undefined;
  private streamClosed = false;
  private protocolConfigSent = false;
  /** How the gRPC stream ended, for the report. */
  readonly stream: { opened: boolean; closedBy?: "envoy" | "server"; serverStatus?: { code: number; details: string } } = {
    opened: false,
  };

  constructor(
    private readonly channel: ExtProcChannel,
    readonly config: FilterConfig,
    private readonly metadataContext: MetadataNamespaces,
    private readonly callbacks: FilterCallbacks,
    private readonly decodingGate: ChainGate,
    private readonly encodingGate: ChainGate,
  ) {
    this.decoding = new ProcessorState("request", this, decodingGate);
    this.encoding = new ProcessorState("response", this, encodingGate);
  }

  // ---- the HTTP stream's events (StreamDecoderFilter / StreamEncoderFilter) --------------

  decodeHeaders(headers: HeaderMap, endStream: boolean): void {
    this.onHeaders(this.decoding, this.decodingGate, headers, endStream);
  }

  decodeData(data: Buffer, endStream: boolean): void {
    const { status, data: left } = this.decoding.onData(data, endStream);
    this.decodingGate.onData(left, endStream, status);
  }

  decodeTrailers(trailers: HeaderMap): void {
    this.decodingGate.onTrailers(trailers, this.decoding.onTrailers(trailers));
  }

  encodeHeaders(headers: HeaderMap, endStream: boolean): void {
    this.onHeaders(this.encoding, this.encodingGate, headers, endStream);
  }

  encodeData(data: Buffer, endStream: boolean): void {
    const { status, data: left } = this.encoding.onData(data, endStream);
    this.encodingGate.onData(left, endStream, status);
  }

  encodeTrailers(trailers: HeaderMap): void {
    this.encodingGate.onTrailers(trailers, this.encoding.onTrailers(trailers));
  }

  /** The HTTP stream is gone (complete or reset): half-close and cancel. */
  onDestroy(): void {
    this.processingComplete = true;
    this.decoding.stopMessageTimer();
    this.encoding.stopMessageTimer();
    this.closeStream();
  }

  // ---- ProcessorHost ----------------------------------------------------------------------

  /** The stream opens with the first message, as in Envoy. */
  write(part: RequestPart): void {
    if (this.call === undefined) this.call = this.openStream();
    const request = ProcessingRequest.fromPartial({
      ...part,
      metadataContext: { filterMetadata: this.metadataContext },
      protocolConfig: this.takeProtocolConfig(),
    });
    this.callbacks.log("sent", summarizeRequest(request), request);
    this.call.write(request);
  }

  onMessageTimeout(): void {
    const waiting = [this.decoding, this.encoding].filter((s) => s.callbackState !== "Idle").map((s) => s.describe());
    this.processingComplete = true;
    this.closeStream();
    this.finishProcessorCalls();
    this.callbacks.fail("message-timeout", `no reply within ${this.config.messageTimeoutMs} ms (${waiting.join("; ")})`);
    this.localReply(504, "ext_proc_error_per-message_timeout_exceeded");
  }

  violation(message: string): void {
    this.callbacks.violation(message);
  }

  // ---- the gRPC stream --------------------------------------------------------------------

  private onHeaders(state: ProcessorState, gate: ChainGate, headers: HeaderMap, endStream: boolean): void {
    if (this.processingComplete) {
      gate.onHeaders(headers, endStream, "Continue");
      return;
    }
    state.onHeaders(headers, endStream);
    // After the message is built: the processor sees content-length, the next hop does not.
    if (state.shouldRemoveContentLength()) headers.remove("content-length");
    gate.onHeaders(headers, endStream, "StopIteration");
  }

  private openStream(): ProcessStream {
    const call = this.channel.open({
      onMessage: (response) => this.onReceiveMessage(response),
      onClose: (status) => this.onRemoteClose(status),
    });
    this.stream.opened = true;
    this.callbacks.log("event", "stream opened");
    return call;
  }

  /** Only the first message of a stream carries protocol_config (Envoy >= 1.34). */
  private takeProtocolConfig(): ProcessingRequest["protocolConfig"] {
    if (!this.config.sendProtocolConfig || this.protocolConfigSent) return undefined;
    this.protocolConfigSent = true;
    return {
      requestBodyMode: bodyModeToProto(this.decoding.bodyMode),
      responseBodyMode: bodyModeToProto(this.encoding.bodyMode),
      sendBodyWithoutWaitingForHeaderResponse: this.config.sendBodyWithoutWaitingForHeaderResponse,
    };
  }

  /** ExternalProcessorStreamImpl::close: closeStream() then resetStream(). */
  private closeStream(): void {
    if (this.call === undefined || this.streamClosed) return;
    this.streamClosed = true;
    this.stream.closedBy = "envoy";
    this.call.close();
    this.callbacks.log("event", "half-close + cancel");
  }

  private onRemoteClose(status: ProcessStatus): void {
    if (this.streamClosed) return; // our own cancel
    this.streamClosed = true;
    this.stream.closedBy = "server";
    this.stream.serverStatus = { code: status.code, details: status.details };
    this.callbacks.log("event", `server closed the stream: status ${status.code} ${status.details}`);
    if (status.code === GrpcStatus.OK) this.onGrpcClose();
    else this.onGrpcError(status);
  }

  /** Server ended the stream with OK: Envoy carries on without ext_proc. */
  private onGrpcClose(): void {
    if (this.processingComplete) return;
    this.processingComplete = true;
    for (const state of [this.decoding, this.encoding]) {
      if (state.bodyMode === "FULL_DUPLEX_STREAMED" && state.duplex.awaitingEndOfStream) {
        this.callbacks.fail(
          "body-lost",
          `server closed the stream (OK) before echoing the end of the ${state.direction} body: ` +
            `${state.duplex.sent} bytes sent, ${state.duplex.echoed} echoed; Envoy kept no copy of the rest`,
        );
      }
    }
    this.decoding.clearAsyncState();
    this.encoding.clearAsyncState();
  }

  private onGrpcError(status: ProcessStatus): void {
    if (this.processingComplete) return;
    this.processingComplete = true;
    this.finishProcessorCalls();
    this.callbacks.fail("grpc-error", `stream failed with gRPC status ${status.code}: ${status.details}`);
    this.localReply(500, `ext_proc_error_gRPC_error_${status.code}{${status.details}}`);
  }

  private onReceiveMessage(response: ProcessingResponse): void {
    // As in Envoy. (Whatever a server sends after Envoy reset the stream never arrives at all.)
    if (this.processingComplete) return;
    this.callbacks.log("received", summarizeResponse(response), response);
    if (response.overrideMessageTimeout !== undefined) {
      // Honoured only with max_message_timeout configured, which the stand-in does not model.
      this.callbacks.log("event", "override_message_timeout ignored (max_message_timeout is 0)");
      return;
    }
    const present = RESPONSE_CASES.filter((c) => response[c] !== undefined);
    if (present.length > 1) {
      this.callbacks.violation(`reply sets ${present.join(" and ")}; Envoy keeps only the last on the wire`);
    }
    const kind = present[present.length - 1];
    let isLastBodyResponse = false;
    let error: ProcessingError | undefined;
    switch (kind) {
      case undefined:
        error = { kind: "spurious-message", message: "unhandled message" };
        break;
      case "immediateResponse":
        this.setDynamicMetadata(response);
        this.processingComplete = true;
        this.finishProcessorCalls();
        this.closeStream();
        this.sendImmediateResponse(response.immediateResponse);
        return;
      case "requestHeaders":
      case "responseHeaders": {
        this.setDynamicMetadata(response);
        const state = kind === "requestHeaders" ? this.decoding : this.encoding;
        error = state.handleHeadersResponse(response[kind] ?? { response: undefined });
        break;
      }
      case "requestBody":
      case "responseBody": {
        const state = kind === "requestBody" ? this.decoding : this.encoding;
        const body = response[kind] ?? { response: undefined };
        isLastBodyResponse = state.isLastBodyResponse(body);
        this.setDynamicMetadata(response);
        error = state.handleBodyResponse(body);
        break;
      }
      case "requestTrailers":
      case "responseTrailers": {
        this.setDynamicMetadata(response);
        const state = kind === "requestTrailers" ? this.decoding : this.encoding;
        error = state.handleTrailersResponse(response[kind] ?? { headerMutation: undefined });
        break;
      }
    }
    if (error !== undefined) {
      this.handleErrorResponse(error);
      return;
    }
    if (kind !== undefined) this.closeIfLastReply(kind, isLastBodyResponse);
  }

  /** runtime ext_proc_fail_close_spurious_resp (default on): spurious replies fail like bad ones. */
  private handleErrorResponse(error: ProcessingError): void {
    this.processingComplete = true;
    this.finishProcessorCalls();
    this.closeStream();
    this.callbacks.fail(error.kind, error.message);
    this.localReply(500, error.message);
  }

  /** Filter::closeGrpcStreamIfLastRespReceived; the request side never qualifies while response headers are sent. */
  private closeIfLastReply(kind: ResponseCase, isLastBodyResponse: boolean): void {
    if (!this.config.closeStreamOnLastReply) return;
    const last =
      (kind === "responseHeaders" && this.encoding.wantsNoMoreAfterHeaders()) ||
      (kind === "responseBody" && isLastBodyResponse) ||
      kind === "responseTrailers";
    if (!last) return;
    this.callbacks.log("event", "last reply received: closing the stream early");
    this.processingComplete = true;
    this.closeStream();
  }

  private setDynamicMetadata(response: ProcessingResponse): void {
    const metadata: unknown = response.dynamicMetadata;
    if (!isRecord(metadata)) return;
    for (const [namespace, value] of Object.entries(metadata)) {
      if (this.config.receivingNamespaces.includes(namespace) && isRecord(value)) {
        this.callbacks.mergeDynamicMetadata(namespace, value);
      }
    }
  }

  private sendImmediateResponse(immediate: ProcessingResponse["immediateResponse"]): void {
    const code = immediate?.status?.code ?? 200;
    this.callbacks.sendLocalReply({
      // MutationUtils::isValidHttpStatus: anything below 200 becomes 200.
      status: code >= 200 ? code : 200,
      body: Buffer.from(immediate?.body ?? Buffer.alloc(0)),
      details: detailsOf(immediate?.details ?? ""),
      headerMutation: immediate?.headers,
      fromImmediateResponse: true,
    });
  }

  private localReply(status: number, details: string): void {
    this.callbacks.sendLocalReply({ status, body: Buffer.alloc(0), details: detailsOf(details), fromImmediateResponse: false });
  }

  private finishProcessorCalls(): void {
    this.decoding.onFinishProcessorCall("Idle");
    this.encoding.onFinishProcessorCall("Idle");
  }
}

/** One line per message for the exchange log. */
export function summarizeRequest(request: ProcessingRequest): string {
  const extra = request.protocolConfig !== undefined ? " +protocol_config" : "";
  for (const direction of ["request", "response"] as const) {
    const headers = request[`${direction}Headers`];
    if (headers !== undefined) {
      return `${direction}_headers (${headers.headers?.headers.length ?? 0} headers) end_of_stream=${headers.endOfStream}${extra}`;
    }
    const body = request[`${direction}Body`];
    if (body !== undefined) return `${direction}_body ${body.body.length} B end_of_stream=${body.endOfStream}${extra}`;
    const trailers = request[`${direction}Trailers`];
    if (trailers !== undefined) return `${direction}_trailers (${trailers.trailers?.headers.length ?? 0})${extra}`;
  }
  return `empty request${extra}`;
}

export function summarizeResponse(response: ProcessingResponse): string {
  const parts: string[] = [];
  for (const direction of ["request", "response"] as const) {
    const headers = response[`${direction}Headers`];
    if (headers !== undefined) parts.push(`${direction}_headers reply${describeMutation(headers.response?.headerMutation)}`);
    const body = response[`${direction}Body`];
    if (body !== undefined) {
      const streamed = body.response?.bodyMutation?.streamedResponse;
      parts.push(
        streamed !== undefined
          ? `${direction}_body streamed_response ${streamed.body.length} B end_of_stream=${streamed.endOfStream}`
          : `${direction}_body reply${describeMutation(body.response?.headerMutation)}`,
      );
    }
    if (response[`${direction}Trailers`] !== undefined) parts.push(`${direction}_trailers reply`);
  }
  if (response.immediateResponse !== undefined) {
    parts.push(`immediate_response ${response.immediateResponse.status?.code ?? "(no status)"}`);
  }
  if (response.dynamicMetadata !== undefined) parts.push("+dynamic_metadata");
  return parts.length > 0 ? parts.join(", ") : "empty reply";
}

function describeMutation(mutation: HeaderMutation | undefined): string {
  if (mutation === undefined) return "";
  const set = mutation.setHeaders.map((o) => o.header?.key ?? "?");
  const removed = mutation.removeHeaders;
  return ` (set ${set.join(",") || "-"}; remove ${removed.join(",") || "-"})`;
}
