// The slice of Envoy configuration the stand-in models: the ext_proc filter and the ORIGINAL_DST
// cluster that routes on the header the sidecar sets.
import { ProcessingMode_BodySendMode } from "../../src/gen/envoy/extensions/filters/http/ext_proc/v3/processing_mode.js";

export type BodyMode = "NONE" | "STREAMED" | "BUFFERED" | "FULL_DUPLEX_STREAMED";
export type TrailerMode = "SEND" | "SKIP";

export interface FilterConfig {
  requestBodyMode: BodyMode;
  responseBodyMode: BodyMode;
  requestTrailerMode: TrailerMode;
  responseTrailerMode: TrailerMode;
  /** Envoy >= 1.34 sends protocol_config on the first message of each stream. */
  sendProtocolConfig: boolean;
  /** message_timeout: per-message timer outside FULL_DUPLEX_STREAMED; a late reply means 504. */
  messageTimeoutMs: number;
  sendBodyWithoutWaitingForHeaderResponse: boolean;
  /**
   * Runtime guard ext_proc_stream_close_optimization (Envoy >= 1.37): half-close and cancel the
   * stream as soon as the last reply Envoy needs has arrived, not when the HTTP stream ends.
   */
  closeStreamOnLastReply: boolean;
  /** metadata_options.receiving_namespaces.untyped: which dynamic_metadata namespaces are kept. */
  receivingNamespaces: string[];
  /** original_dst_lb_config.http_header_name. */
  routingHeader: string;
  /**
   * "single" is what ORIGINAL_DST does: the first header's whole value must parse as ip:port, so
   * a comma list fails (503). "first-of-list" takes the first entry of a comma list, as a data
   * plane that implements the endpoint-picker fallback list would.
   */
  routingHeaderValue: "single" | "first-of-list";
}

/** Envoy's defaults for a filter with only a grpc_service configured. */
export const DEFAULT_CONFIG: Readonly<FilterConfig> = {
  requestBodyMode: "NONE",
  responseBodyMode: "NONE",
  requestTrailerMode: "SKIP",
  responseTrailerMode: "SKIP",
  sendProtocolConfig: true,
  messageTimeoutMs: 200,
  sendBodyWithoutWaitingForHeaderResponse: false,
  closeStreamOnLastReply: false,
  receivingNamespaces: ["envoy.lb"],
  routingHeader: "x-gateway-destination-endpoint",
  routingHeaderValue: "single",
};

/** The endpoint-picker reference settings (Gateway API Inference Extension). */
export const FULL_DUPLEX: Readonly<FilterConfig> = {
  ...DEFAULT_CONFIG,
  requestBodyMode: "FULL_DUPLEX_STREAMED",
  responseBodyMode: "FULL_DUPLEX_STREAMED",
  requestTrailerMode: "SEND",
  responseTrailerMode: "SEND",
  messageTimeoutMs: 10_000,
};

/** Merges overrides and refuses what Envoy's config validation refuses. */
export function resolveConfig(base: Readonly<FilterConfig>, override: Partial<FilterConfig> = {}): FilterConfig {
  const config: FilterConfig = { ...base, ...override };
  for (const direction of ["request", "response"] as const) {
    const body = config[`${direction}BodyMode`];
    const trailers = config[`${direction}TrailerMode`];
    if (body === "FULL_DUPLEX_STREAMED" && trailers !== "SEND") {
      throw new Error(
        `If the ext_proc filter has the ${direction}_body_mode set to FULL_DUPLEX_STREAMED, then the ${direction}_trailer_mode has to be set to SEND`,
      );
    }
  }
  if (!(config.messageTimeoutMs > 0)) throw new Error("message_timeout must be positive");
  return config;
}

export function bodyModeToProto(mode: BodyMode): ProcessingMode_BodySendMode {
  return ProcessingMode_BodySendMode[mode];
}
