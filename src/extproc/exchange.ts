import type { Decision, InferenceExchange } from "../inference/lifecycle.js";
import type { HeldBodies } from "./held-bodies.js";
import {
  DESTINATION_HEADER,
  LB_NAMESPACE,
  MODEL_REWRITE_HEADER,
  ROUTING_HEADERS,
  SERVED_KEY,
  SUBSET_KEY,
  SUBSET_NAMESPACE,
  type BodyMode,
  type RoutingHeader,
} from "../protocol.js";
import type { Refusal } from "../inference/refusal.js";
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
  type Direction,
  type HeaderChanges,
  type ProcessingRequest,
  type ProcessingResponse,
} from "./messages.js";

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
  /** Routing headers taken from the request; any other is ignored (and, in the picker role, removed before the engine sees it). */
  trustedHeaders: ReadonlySet<RoutingHeader>;
  /** Bytes of request bodies held for the pick, across all exchanges, within one limit. */
  heldBodies: HeldBodies;
}

/** Where replies go: the gRPC stream. */
export interface ReplySink {
  write(reply: ProcessingResponse): void;
  /** End the stream with a gRPC error status (Envoy answers the client 500, or resets a response under way). */
  abort(code: "INTERNAL" | "UNAVAILABLE", message: string): void;
}

/** What a client sees when the sidecar fails on its request while the request phase is open. */
const INTERNAL_REFUSAL: Refusal = { status: 500, code: "internal_error", message: "the endpoint picker failed on this request; its log names the cause" };

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
  /** Bytes of this request's body counted against the shared limit until the pick is made. */
  private heldBytes = 0;
  /** Routing headers the client sent that the config does not trust, removed on the way upstream (the destination is overwritten anyway). */
  private stripped: RoutingHeader[] = [];

  constructor(
    private readonly sink: ReplySink,
    private readonly inference: InferenceExchange,
    private readonly settings: ExchangeSettings,
    private readonly log: Logger,
  ) {
    this.modes = { ...settings.assumedModes };
    inference.onFailure((cause) => this.fail(cause));
  }

  /** One message from Envoy. Whatever fails while it is handled fails this exchange alone. */
  onMessage(message: ProcessingRequest): void {
    this.guarded(() => this.handle(message));
  }

  private handle(message: ProcessingRequest): void {
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
      this.chosenByMetadata = typeof chosen === "string" && chosen.length > 0 ? chosen : undefined;
      this.subset = subsetOf(message);
      this.onRequestHeaders(message.requestHeaders.headers, message.requestHeaders.endOfStream);
    } else if (message.requestBody !== undefined) this.onRequestBody(message.requestBody.body, message.requestBody.endOfStream);
    else if (message.requestTrailers !== undefined) this.onRequestTrailers();
    else if (this.requestPhase !== "forwarding") {
      // Envoy sends the response only after the request went upstream, which needs our reply first.
      if (message.responseHeaders !== undefined || message.responseBody !== undefined || message.responseTrailers !== undefined) {
        this.protocolError("response before the request was forwarded");
      }
    } else if (message.responseHeaders !== undefined) {
      this.onResponseHeaders(message.responseHeaders.headers, message.responseHeaders.endOfStream, servedOf(message));
    } else if (message.responseBody !== undefined) this.onResponseBody(message.responseBody.body, message.responseBody.endOfStream);
    else if (message.responseTrailers !== undefined) this.onResponseTrailers();
  }

  /**
   * The stream ended from Envoy's side: half-close, cancel or transport error. With no
   * response phase this was Envoy's own local reply (or a reset before the response).
   */
  onStreamEnd(): void {
    this.guarded(() => {
      if (!this.close()) return;
      if (this.responsePhase === "body" && this.modes.response === "NONE") {
        // Headers-only responses: the body passed Envoy unseen; the stream's end is the response's end.
        this.inference.responseEnd();
        return;
      }
      this.inference.abort(this.responsePhase === "waiting" ? "no_response" : "client_reset");
    });
  }

  /** The sidecar is stopping: the exchange ends with outcome `shutdown` (never held against the engine), and so does its stream. */
  shutdown(): void {
    this.guarded(() => {
      if (!this.close()) return;
      this.inference.abort("shutdown");
      this.sink.abort("UNAVAILABLE", "metadata-center is shutting down");
    });
  }

  /** Stops handling messages and lets go of what the exchange holds; false when it had ended already. */
  private close(): boolean {
    if (this.ended) return false;
    this.ended = true;
    clearTimeout(this.bodyTimer);
    this.chunks.length = 0;
    this.waiting = [];
    this.releaseHeldBody();
    return true;
  }

  /**
   * This exchange failed inside the sidecar: its lifecycle ends (released once, one log line), and
   * so does its stream — a 500 in the OpenAI error shape while the request phase is open, else a
   * gRPC error. Never throws: it is where every other failure goes.
   */
  private fail(error: unknown): void {
    const requestOpen = this.requestPhase === "headers" || this.requestPhase === "collecting" || this.requestPhase === "deciding";
    if (!this.close()) return;
    try {
      this.inference.fail(error);
      if (requestOpen) {
        this.sink.write(immediateReply(INTERNAL_REFUSAL.status, this.inference.errorBody(INTERNAL_REFUSAL, this.headers.get("x-request-id")), "metadata-center: internal_error"));
      } else this.sink.abort("INTERNAL", "metadata-center failed on this exchange");
    } catch (secondary) {
      this.log.error({ err: secondary, cause: String(error) }, "ending a failed exchange failed");
    }
  }

  private guarded(run: () => void): void {
    try {
      run();
    } catch (error) {
      this.fail(error);
    }
  }

  private onRequestHeaders(map: Parameters<typeof headerMapOf>[0], endOfStream: boolean): void {
    if (this.requestPhase !== "headers") return this.protocolError("request headers twice");
    this.headers = headerMapOf(map);
    // Sent by the client and not trusted: removed on the way upstream (picker role), never read.
    this.stripped = this.settings.observer
      ? []
      : ROUTING_HEADERS.filter((name) => name !== DESTINATION_HEADER && !this.settings.trustedHeaders.has(name) && this.headers.has(name));
    this.path = this.headers.get(":path") ?? "";
    this.inference.requestPath(this.path);
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
        this.write(headersReply("request", this.settings.observer ? {} : { remove: [DESTINATION_HEADER, ...this.stripped] }));
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
    if (!this.settings.heldBodies.take(body.length)) {
      return this.refuse({
        status: 503,
        code: "overloaded",
        message: `request bodies held for picking would exceed extproc.maxHeldBodyBytes (${this.settings.heldBodies.limit} bytes across all requests); retry later`,
      });
    }
    this.heldBytes += body.length;
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
    this.bodyTimer = setTimeout(
      () =>
        this.guarded(() => {
          if (this.ended || this.requestPhase !== "collecting") return;
          this.refuse({
            status: 408,
            code: "request_timeout",
            message: `request body not complete after ${timeout / 1000} s (${this.bodyBytes} bytes received)`,
          });
        }),
      timeout,
    );
    // A stream Envoy still holds open must not keep a stopping process alive.
    this.bodyTimer.unref();
  }

  /** Pick, then reply: at once when the pick is synchronous; messages arriving while it waits are handled afterwards, in order. */
  private decide(body: Buffer | undefined, bodySeen: boolean, then: (decision: Decision) => void): void {
    clearTimeout(this.bodyTimer);
    this.requestPhase = "deciding";
    const started = performance.now();
    const trusted = (name: RoutingHeader): string | undefined => (this.settings.trustedHeaders.has(name) ? this.headers.get(name) : undefined);
    // GIE: an earlier picker's choice comes in `envoy.lb` metadata, which no client can send; the
    // header only when trusted. It may be a comma list (primary, fallbacks): the primary is the engine.
    const routedTo = (this.chosenByMetadata ?? trusted(DESTINATION_HEADER))?.split(",")[0]?.trim() || undefined;
    const request = {
      path: this.path,
      header: (name: string) => this.headers.get(name),
      modelOverride: trusted(MODEL_REWRITE_HEADER) || undefined,
      body,
      bodySeen,
      chosenEngine: routedTo,
      subset: this.subset,
    };
    const decided = (decision: Decision): void =>
      this.guarded(() => {
        this.releaseHeldBody();
        if (this.ended) return;
        this.requestPhase = decision.kind === "refuse" ? "refused" : "forwarding";
        then(decision);
        this.settings.observePick?.((performance.now() - started) / 1000, decision.kind === "refuse" ? "refused" : "routed");
        const waiting = this.waiting;
        this.waiting = [];
        for (const message of waiting) this.handle(message);
      });
    const failed = (error: unknown): void => {
      this.fail(error);
      this.guarded(() => this.settings.observePick?.((performance.now() - started) / 1000, "refused"));
    };
    let decision: ReturnType<InferenceExchange["decide"]>;
    try {
      decision = this.inference.decide(request);
    } catch (error) {
      failed(error);
      return;
    }
    // Answered at once, the reply goes out before the transport hands over its next message.
    if (decision instanceof Promise) decision.then(decided, failed);
    else decided(decision);
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
    if (this.stripped.length > 0) changes.remove = [...this.stripped];
    const metadata = { [LB_NAMESPACE]: { [DESTINATION_HEADER]: [decision.engine, ...decision.fallbacks].join(",") } };
    const replaced = decision.body;
    if (kind === "request_headers") {
      // A rewritten body streams on without a length; Envoy would refuse a stale one.
      if (replaced !== undefined) changes.remove = [...(changes.remove ?? []), "content-length"];
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
    this.releaseHeldBody();
    this.inference.refused(refusal, this.headers.get("x-request-id"));
    this.write(immediateReply(refusal.status, this.inference.errorBody(refusal, this.headers.get("x-request-id")), `metadata-center: ${refusal.code}`));
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

  private releaseHeldBody(): void {
    this.settings.heldBodies.give(this.heldBytes);
    this.heldBytes = 0;
  }

  private protocolError(what: string): void {
    this.log.warn({ what, path: this.path }, "ext_proc message out of order; ignored");
  }

  private write(reply: ProcessingResponse): void {
    if (!this.ended) this.sink.write(reply);
  }
}
