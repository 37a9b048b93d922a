import type { Decision, InferenceExchange } from "../inference/lifecycle.js";
import { refusalBody, type Refusal } from "../inference/refusal.js";
import type { Logger } from "../log.js";
import {
  bodyModeOf,
  bodyReply,
  filterMetadataOf,
  headerMapOf,
  headersReply,
  immediateReply,
  streamedBodyReply,
  trailersReply,
  type BodyMode,
  type Direction,
  type HeaderChanges,
  type ProcessingRequest,
  type ProcessingResponse,
} from "./messages.js";

/** The routing header Envoy's ORIGINAL_DST cluster reads (GIE endpoint-picker protocol). */
export const DESTINATION_HEADER = "x-gateway-destination-endpoint";
/** Where the gateway restricts the pick: `filter_metadata[SUBSET_NAMESPACE][SUBSET_KEY]`, a list of ip:port. */
export const SUBSET_NAMESPACE = "envoy.lb.subset_hint";
export const SUBSET_KEY = "x-gateway-destination-endpoint-subset";
/**
 * The load-balancing metadata namespace: the chosen engine and its fallbacks go out in it (keyed
 * by DESTINATION_HEADER), an earlier picker's choice comes in it, and so does, on the response
 * path, the engine that actually served (SERVED_KEY).
 */
export const LB_NAMESPACE = "envoy.lb";
export const SERVED_KEY = "x-gateway-destination-endpoint-served";

/** The subset hint as a list; a comma list in one string is accepted too. Undefined = no hint. */
function subsetOf(message: ProcessingRequest): string[] | undefined {
  const value = filterMetadataOf(message, SUBSET_NAMESPACE)?.[SUBSET_KEY];
  if (value === undefined) return undefined;
  const items: unknown[] = Array.isArray(value) ? value : typeof value === "string" ? value.split(",") : [];
  return items.filter((item): item is string => typeof item === "string").map((item) => item.trim()).filter((item) => item.length > 0);
}

function servedOf(message: ProcessingRequest): string | undefined {
  const value = filterMetadataOf(message, LB_NAMESPACE)?.[SERVED_KEY];
  return typeof value === "string" && value.length > 0 ? value : undefined;
}
/** Envoy accepts body chunks up to 64 KiB; stay under it with room for framing. */
export const MAX_ECHO_CHUNK = 62_000;

export interface ExchangeSettings {
  /** Body modes assumed when Envoy does not announce them (before 1.34 there is no protocol_config). */
  assumedModes: { request: BodyMode; response: BodyMode };
  maxRequestBodyBytes: number;
  /** A body held for the pick that has not all arrived by then is refused (408); 0 = never. */
  requestBodyTimeoutMs: number;
  /** Told how long each pick took, from body end (or headers) to the reply that routes or refuses. */
  observePick?: (seconds: number, outcome: "routed" | "refused") => void;
  /** Observer role: an earlier picker's routing header and metadata are left as they are. */
  observer: boolean;
}

/** Where replies go: the gRPC stream. */
export interface ReplySink {
  write(reply: ProcessingResponse): void;
}

/**
 * Request direction:
 *   headers → collecting (FULL_DUPLEX: all chunks; BUFFERED: the one body message)
 *           → deciding (pick in progress; later messages wait) → forwarding → done
 * A refusal (ImmediateResponse) ends everything: nothing is sent after it.
 * Response direction: headers → body → done.
 */
type RequestPhase = "headers" | "collecting" | "deciding" | "forwarding" | "refused";
type ResponsePhase = "waiting" | "body" | "done";

/** One ext_proc stream = one HTTP exchange, driven message by message. */
export class ExtProcExchange {
  private requestPhase: RequestPhase = "headers";
  /** The engine an earlier picker wrote into `envoy.lb` metadata (forwarded by Envoy when configured). */
  private chosenByMetadata: string | undefined;
  private responsePhase: ResponsePhase = "waiting";
  private modes: { request: BodyMode; response: BodyMode };
  private path = "";
  private headers = new Map<string, string>();
  private subset: string[] | undefined;
  private readonly chunks: Buffer[] = [];
  private bodyBytes = 0;
  private hadTrailers = false;
  /** Messages that arrived while a pick was in progress, handled in order after it. */
  private waiting: ProcessingRequest[] = [];
  private ended = false;
  /** Running while a FULL_DUPLEX_STREAMED body is collected: the sidecar holds it until its end. */
  private bodyTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly sink: ReplySink,
    private readonly inference: InferenceExchange,
    private readonly settings: ExchangeSettings,
    private readonly log: Logger,
  ) {
    this.modes = { ...settings.assumedModes };
  }

  onMessage(message: ProcessingRequest): void {
    if (this.ended || this.requestPhase === "refused") return;
    if (this.requestPhase === "deciding") {
      this.waiting.push(message);
      return;
    }
    if (message.protocolConfig !== undefined) {
      this.modes = {
        request: bodyModeOf(message.protocolConfig.requestBodyMode),
        response: bodyModeOf(message.protocolConfig.responseBodyMode),
      };
    }
    if (message.requestHeaders !== undefined) {
      const chosen = filterMetadataOf(message, LB_NAMESPACE)?.[DESTINATION_HEADER];
      this.chosenByMetadata = typeof chosen === "string" ? chosen : undefined;
      this.subset = subsetOf(message);
      this.onRequestHeaders(message.requestHeaders.headers, message.requestHeaders.endOfStream);
    } else if (message.requestBody !== undefined) this.onRequestBody(message.requestBody.body, message.requestBody.endOfStream);
    else if (message.requestTrailers !== undefined) this.onRequestTrailers();
    else if (message.responseHeaders !== undefined) {
      this.onResponseHeaders(message.responseHeaders.headers, message.responseHeaders.endOfStream, servedOf(message));
    } else if (message.responseBody !== undefined) this.onResponseBody(message.responseBody.body, message.responseBody.endOfStream);
    else if (message.responseTrailers !== undefined) this.onResponseTrailers();
  }

  /**
   * The stream ended from Envoy's side: half-close, cancel or transport error. With no
   * response phase this was Envoy's own local reply (or a reset before the response).
   */
  onStreamEnd(): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.bodyTimer);
    this.chunks.length = 0;
    this.waiting = [];
    if (this.responsePhase === "body" && this.modes.response === "NONE") {
      // Headers-only responses: the body passed Envoy unseen; the stream's end is the response's end.
      this.inference.responseEnd();
      return;
    }
    this.inference.abort(this.responsePhase === "waiting" ? "no_response" : "client_reset");
  }

  private onRequestHeaders(map: Parameters<typeof headerMapOf>[0], endOfStream: boolean): void {
    if (this.requestPhase !== "headers") return this.protocolError("request headers twice");
    this.headers = headerMapOf(map);
    this.path = this.headers.get(":path") ?? "";
    if (endOfStream) return this.decide(undefined, true, (decision) => this.replyRouted("request_headers", decision));
    switch (this.modes.request) {
      case "FULL_DUPLEX_STREAMED":
        this.requestPhase = "collecting";
        this.startBodyTimer();
        return;
      case "BUFFERED":
        // The body comes only after this reply; the route goes on the body reply, which
        // may still change the request headers. Never let a client's value through meanwhile.
        this.requestPhase = "collecting";
        this.write(headersReply("request", this.settings.observer ? {} : { remove: [DESTINATION_HEADER] }));
        return;
      default:
        // Headers-only and STREAMED: the headers go upstream with this reply, before any body.
        return this.decide(undefined, false, (decision) => this.replyRouted("request_headers", decision));
    }
  }

  private onRequestBody(body: Buffer, endOfStream: boolean): void {
    if (this.requestPhase === "forwarding") {
      this.write(bodyReply("request"));
      return;
    }
    if (this.requestPhase !== "collecting") return this.protocolError("request body before headers");
    this.bodyBytes += body.length;
    if (this.bodyBytes > this.settings.maxRequestBodyBytes) {
      return this.refuse({
        status: 413,
        code: "request_too_large",
        message: `request body exceeds the limit of ${this.settings.maxRequestBodyBytes} bytes`,
      });
    }
    if (body.length > 0) this.chunks.push(body);
    if (this.modes.request === "BUFFERED") {
      // The whole body in one message, whether or not trailers follow.
      return this.decide(this.wholeBody(), true, (decision) => this.replyRouted("request_body", decision));
    }
    if (endOfStream) this.finishFullDuplexRequest();
  }

  private onRequestTrailers(): void {
    this.hadTrailers = true;
    if (this.requestPhase === "collecting" && this.modes.request === "FULL_DUPLEX_STREAMED") {
      return this.finishFullDuplexRequest();
    }
    this.write(trailersReply("request"));
  }

  private finishFullDuplexRequest(): void {
    const body = this.wholeBody();
    this.decide(body, true, (decision) => {
      if (!this.replyRouted("request_headers", decision)) return;
      const forward = (decision.kind === "route" ? decision.body : undefined) ?? body ?? Buffer.alloc(0);
      this.echo("request", forward, !this.hadTrailers);
      if (this.hadTrailers) this.write(trailersReply("request"));
    });
  }

  private onResponseHeaders(map: Parameters<typeof headerMapOf>[0], endOfStream: boolean, servedBy: string | undefined): void {
    const headers = headerMapOf(map);
    this.responsePhase = "body";
    this.inference.responseHeaders(Number(headers.get(":status") ?? 0), headers.get("content-type"), servedBy);
    this.write(headersReply("response"));
    if (endOfStream) this.endResponse();
  }

  private onResponseBody(body: Buffer, endOfStream: boolean): void {
    // Echo first: the client is waiting for these bytes; accounting can follow.
    if (this.modes.response === "FULL_DUPLEX_STREAMED") this.echo("response", body, endOfStream);
    else this.write(bodyReply("response"));
    this.inference.responseBody(body);
    if (endOfStream) this.endResponse();
  }

  private onResponseTrailers(): void {
    this.write(trailersReply("response"));
    this.endResponse();
  }

  private endResponse(): void {
    this.responsePhase = "done";
    this.inference.responseEnd();
  }

  private wholeBody(): Buffer | undefined {
    if (this.chunks.length === 0) return undefined;
    const body = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.bodyBytes);
    this.chunks.length = 0;
    return body;
  }

  private startBodyTimer(): void {
    const timeout = this.settings.requestBodyTimeoutMs;
    if (timeout <= 0) return;
    this.bodyTimer = setTimeout(() => {
      if (this.ended || this.requestPhase !== "collecting") return;
      this.refuse({
        status: 408,
        code: "request_timeout",
        message: `request body not complete after ${timeout / 1000} s (${this.bodyBytes} bytes received)`,
      });
    }, timeout);
    // A stream Envoy still holds open must not keep a stopping process alive.
    this.bodyTimer.unref();
  }

  /** Pick (async), then reply; messages arriving meanwhile are handled afterwards, in order. */
  private decide(body: Buffer | undefined, bodySeen: boolean, then: (decision: Decision) => void): void {
    clearTimeout(this.bodyTimer);
    this.requestPhase = "deciding";
    const started = performance.now();
    // The routing header may be a comma list (primary, fallbacks): the primary is the engine.
    const routedTo = (this.headers.get(DESTINATION_HEADER) || this.chosenByMetadata)?.split(",")[0]?.trim() || undefined;
    const request = {
      path: this.path,
      header: (name: string) => this.headers.get(name),
      body,
      bodySeen,
      chosenEngine: routedTo,
      subset: this.subset,
    };
    this.inference
      .decide(request)
      .catch((error: unknown): Decision => {
        this.log.error({ err: error }, "pick failed");
        return { kind: "refuse", refusal: { status: 500, code: "internal_error", message: "the endpoint picker failed" } };
      })
      .then((decision) => {
        if (this.ended) return;
        this.requestPhase = decision.kind === "refuse" ? "refused" : "forwarding";
        then(decision);
        this.settings.observePick?.((performance.now() - started) / 1000, decision.kind === "refuse" ? "refused" : "routed");
        const waiting = this.waiting;
        this.waiting = [];
        for (const message of waiting) this.onMessage(message);
      });
  }

  /** Sends the route (or the refusal) on the reply to `kind`. True when routed. */
  private replyRouted(kind: "request_headers" | "request_body", decision: Decision): boolean {
    if (decision.kind === "refuse") {
      this.refuse(decision.refusal);
      return false;
    }
    if (decision.kind === "observe") {
      this.write(kind === "request_headers" ? headersReply("request") : bodyReply("request"));
      return true;
    }
    // ORIGINAL_DST routes to the header's value as one literal ip:port and cannot take a list:
    // the header names the primary only; the metadata carries primary then fallbacks, in order.
    const changes: HeaderChanges = { set: { [DESTINATION_HEADER]: decision.engine } };
    const metadata = { [LB_NAMESPACE]: { [DESTINATION_HEADER]: [decision.engine, ...decision.fallbacks].join(",") } };
    const replaced = decision.body;
    if (kind === "request_headers") {
      // A rewritten body streams on without a length; Envoy would refuse a stale one.
      if (replaced !== undefined) changes.remove = ["content-length"];
      this.write(headersReply("request", changes, metadata));
    } else {
      // BUFFERED: the new body replaces the buffered one, with its own length.
      if (replaced !== undefined) changes.set = { ...changes.set, "content-length": String(replaced.length) };
      this.write(bodyReply("request", changes, metadata, replaced));
    }
    return true;
  }

  private refuse(refusal: Refusal): void {
    clearTimeout(this.bodyTimer);
    this.requestPhase = "refused";
    this.chunks.length = 0;
    this.inference.refused(refusal, this.headers.get("x-request-id"));
    this.write(immediateReply(refusal.status, refusalBody(refusal), `metadata-center: ${refusal.code}`));
  }

  /** FULL_DUPLEX_STREAMED echo, in pieces Envoy accepts; eos rides on the last piece. */
  private echo(direction: Direction, body: Buffer, endOfStream: boolean): void {
    if (body.length <= MAX_ECHO_CHUNK) {
      this.write(streamedBodyReply(direction, body, endOfStream));
      return;
    }
    for (let offset = 0; offset < body.length; offset += MAX_ECHO_CHUNK) {
      const end = Math.min(offset + MAX_ECHO_CHUNK, body.length);
      this.write(streamedBodyReply(direction, body.subarray(offset, end), endOfStream && end === body.length));
    }
  }

  private protocolError(what: string): void {
    this.log.warn({ what, path: this.path }, "ext_proc message out of order; ignored");
  }

  private write(reply: ProcessingResponse): void {
    if (!this.ended) this.sink.write(reply);
  }
}
