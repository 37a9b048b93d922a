/**
 * The thin typed boundary over the generated ext_proc protos: reading what Envoy sends and
 * building the replies it accepts. Nothing else in the project touches `src/gen` shapes.
 */
import type { HeaderMap, HeaderValueOption } from "../gen/envoy/config/core/v3/base.js";
import { ProcessingMode_BodySendMode } from "../gen/envoy/extensions/filters/http/ext_proc/v3/processing_mode.js";
import type { BodyMode } from "../protocol.js";
import {
  CommonResponse_ResponseStatus,
  type CommonResponse,
  type ProcessingRequest,
  type ProcessingResponse,
} from "../gen/envoy/service/ext_proc/v3/external_processor.js";

export type { ProcessingRequest, ProcessingResponse };


export function bodyModeOf(mode: ProcessingMode_BodySendMode): BodyMode {
  switch (mode) {
    case ProcessingMode_BodySendMode.STREAMED:
      return "STREAMED";
    case ProcessingMode_BodySendMode.BUFFERED:
    case ProcessingMode_BodySendMode.BUFFERED_PARTIAL:
      return "BUFFERED";
    case ProcessingMode_BodySendMode.FULL_DUPLEX_STREAMED:
      return "FULL_DUPLEX_STREAMED";
    default:
      return "NONE";
  }
}

/** Envoy puts header values in `raw_value` bytes; older senders use `value`. Keys are lower-case. */
export function headerMapOf(map: HeaderMap | undefined): Map<string, string> {
  const headers = new Map<string, string>();
  for (const header of map?.headers ?? []) {
    const value = header.rawValue.length > 0 ? header.rawValue.toString("utf8") : header.value;
    const existing = headers.get(header.key);
    headers.set(header.key, existing === undefined ? value : `${existing},${value}`);
  }
  return headers;
}

/** Untyped filter metadata from `metadata_context`, narrowed to plain objects. */
export function filterMetadataOf(request: ProcessingRequest, namespace: string): Record<string, unknown> | undefined {
  const value: unknown = request.metadataContext?.filterMetadata[namespace];
  return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : undefined;
}

export interface HeaderChanges {
  /** Headers to overwrite (value in `raw_value` only; `append` unset means overwrite). */
  set?: Record<string, string>;
  remove?: string[];
}

const setOption = (key: string, value: string): HeaderValueOption => ({
  header: { key, value: "", rawValue: Buffer.from(value, "utf8") },
  append: undefined,
  appendAction: 0,
  keepEmptyValue: false,
});

function commonResponse(changes: HeaderChanges | undefined): CommonResponse {
  return {
    status: CommonResponse_ResponseStatus.CONTINUE,
    headerMutation:
      changes === undefined
        ? undefined
        : {
            setHeaders: Object.entries(changes.set ?? {}).map(([key, value]) => setOption(key, value)),
            removeHeaders: changes.remove ?? [],
          },
    bodyMutation: undefined,
    trailers: undefined,
    clearRouteCache: false,
  };
}

const reply = (fields: Partial<ProcessingResponse>): ProcessingResponse => ({
  dynamicMetadata: undefined,
  modeOverride: undefined,
  overrideMessageTimeout: undefined,
  ...fields,
});

export type Direction = "request" | "response";

export const headersReply = (
  direction: Direction,
  changes?: HeaderChanges,
  dynamicMetadata?: Record<string, Record<string, string>>,
): ProcessingResponse =>
  reply({
    [direction === "request" ? "requestHeaders" : "responseHeaders"]: { response: commonResponse(changes) },
    dynamicMetadata,
  });

/**
 * Reply to one body message in STREAMED or BUFFERED mode (header changes apply in BUFFERED);
 * `replaceBody` swaps the message's body for another.
 */
export const bodyReply = (
  direction: Direction,
  changes?: HeaderChanges,
  dynamicMetadata?: Record<string, Record<string, string>>,
  replaceBody?: Buffer,
): ProcessingResponse => {
  const response = commonResponse(changes);
  if (replaceBody !== undefined) response.bodyMutation = { body: replaceBody };
  return reply({ [direction === "request" ? "requestBody" : "responseBody"]: { response }, dynamicMetadata });
};

/** FULL_DUPLEX_STREAMED: the bytes that go on; Envoy kept no copy of its own. */
export const streamedBodyReply = (direction: Direction, body: Buffer, endOfStream: boolean): ProcessingResponse => {
  const response = commonResponse(undefined);
  response.bodyMutation = { streamedResponse: { body, endOfStream } };
  return reply({ [direction === "request" ? "requestBody" : "responseBody"]: { response } });
};

export const trailersReply = (direction: Direction): ProcessingResponse =>
  reply({ [direction === "request" ? "requestTrailers" : "responseTrailers"]: { headerMutation: undefined } });

export const immediateReply = (status: number, body: string, details: string): ProcessingResponse =>
  reply({
    immediateResponse: {
      status: { code: status },
      headers: { setHeaders: [setOption("content-type", "application/json")], removeHeaders: [] },
      body: Buffer.from(body, "utf8"),
      grpcStatus: undefined,
      details,
    },
  });
