// An Envoy-faithful ext_proc client: runs one HTTP exchange through an ext_proc server exactly as
// Envoy's HTTP connection manager, ext_proc filter, router and ORIGINAL_DST cluster would, and
// reports what the client, the upstream and the processor saw. The facts it follows are in
// /work/shared/envoy-ext-proc.md; the state machines mirror Envoy's source (see the modules).
import { randomUUID } from "node:crypto";
import type { ProcessingRequest, ProcessingResponse } from "../../src/gen/envoy/service/ext_proc/v3/external_processor.js";
import { AsyncQueue } from "./async-queue.js";
import { type Chunking, type Ending, type Frame, fixedFrames, streamedFrames, trailersMap } from "./body-source.js";
import { ChainGate, type StageSink } from "./chain-gate.js";
import { type FilterConfig, FULL_DUPLEX, resolveConfig } from "./config.js";
import {
  ExtProcFilter,
  type FailureKind,
  type FilterCallbacks,
  type LocalReply,
  type LogDirection,
  type MetadataNamespaces,
} from "./filter.js";
import { applyHeaderMutation, type HeaderInput, HeaderMap, headerPairs } from "./header-map.js";
import { type ChannelTls, ExtProcChannel } from "./grpc-channel.js";
import { type Endpoint, pickOriginalDst } from "./routing.js";
import type { Upstream, UpstreamRequest, UpstreamResponse } from "./upstream.js";

export type { Chunking, Ending } from "./body-source.js";
export { type BodyMode, DEFAULT_CONFIG, type FilterConfig, FULL_DUPLEX, type TrailerMode } from "./config.js";
export type { FailureKind, MetadataNamespaces } from "./filter.js";
export type { ChannelTls } from "./grpc-channel.js";
export type { HeaderInput } from "./header-map.js";
export { httpUpstream, type Upstream, type UpstreamRequest, type UpstreamResponse } from "./upstream.js";

export interface ExchangeRequest {
  method: string;
  path: string;
  /** Defaults to the `host` header, else "localhost". Envoy never sends `host` to ext_proc. */
  authority?: string;
  headers?: HeaderInput;
  /** An async iterable is a body arriving over time (HTTP/1 client): it ends with an empty frame. */
  body?: Buffer | string | AsyncIterable<Buffer | string>;
  /** A function is read once the body has ended (HTTP/1 trailers are known only then). */
  trailers?: Readonly<Record<string, string>> | (() => Readonly<Record<string, string>> | undefined);
}

/** Points where a client disconnect (stream reset) can be injected. */
export type ResetPoint =
  | { at: "request-start" } // before Envoy decoded anything: no stream is ever opened
  | { at: "request-headers" } // request headers decoded (and sent to ext_proc)
  | { at: "request-body"; chunk: number; endOfStream: boolean }
  | { at: "request-trailers" }
  | { at: "request-complete" } // all of the request decoded; replies may still be pending
  | { at: "routed"; endpoint: string } // ext_proc released the headers, the router picked a host
  | { at: "response-headers" } // upstream response headers decoded
  | { at: "response-body"; chunk: number; endOfStream: boolean }
  | { at: "response-trailers" }
  | { at: "downstream-headers"; status: number }; // the client got response headers

/** The points of an exchange already under way where a client can disconnect (every ResetPoint after the stream opened, bar trailers). */
export const RESET_POINTS = [
  "request-headers",
  "request-body",
  "request-complete",
  "routed",
  "response-headers",
  "response-body",
  "downstream-headers",
] as const satisfies ReadonlyArray<ResetPoint["at"]>;

/** Streaming view of what the downstream client receives (the proxy writes it to its socket). */
export interface DownstreamObserver {
  onHeaders(status: number, headers: ReadonlyArray<readonly [string, string]>): void;
  onData(chunk: Buffer): void;
  onTrailers(trailers: Record<string, string>): void;
  onEnd(): void;
  /** The stream was reset: the client sees the connection drop. */
  onReset(): void;
}

export interface ExchangeSpec {
  request: ExchangeRequest;
  /** Splits a fixed body into frames; default: one frame. */
  chunking?: Chunking;
  /** How a fixed body ends when there are no trailers; default "eos-on-last". */
  ending?: Ending;
  /** metadata_context.filter_metadata sent on every message. */
  metadataContext?: MetadataNamespaces;
  upstream: Upstream;
  /** Asked at each ResetPoint; true = the client resets the stream there. */
  reset?: (at: ResetPoint) => boolean;
  /** Aborting = the client disconnects. */
  signal?: AbortSignal;
  config?: Partial<FilterConfig>;
  /** A client gives up after this long (reported as failure "stalled"); 0 = never. Default 10 s. */
  timeoutMs?: number;
  downstream?: DownstreamObserver;
}

export interface UpstreamRecord {
  endpoint: string;
  method: string;
  path: string;
  authority: string;
  headers: Record<string, string>;
  body: Buffer;
  trailers: Record<string, string> | undefined;
  /** The request reached its end (end of stream or trailers). */
  complete: boolean;
}

export interface LogEntry {
  /** Milliseconds since the exchange started. */
  ms: number;
  direction: LogDirection;
  summary: string;
  message?: ProcessingRequest | ProcessingResponse;
}

export interface ExchangeResult {
  /** What the downstream client got; undefined if the stream was reset before response headers. */
  status: number | undefined;
  headers: Record<string, string>;
  body: Buffer;
  trailers: Record<string, string> | undefined;
  /** The HTTP stream was reset rather than completed (the client saw the connection drop). */
  reset: { by: "client" | "upstream" | "envoy"; reason: string } | undefined;
  routedTo: string | undefined;
  upstreamRequest: UpstreamRecord | undefined;
  /** Dynamic metadata kept from replies (receiving namespaces only), merged per namespace. */
  dynamicMetadata: MetadataNamespaces;
  immediateResponse: { status: number; headers: Record<string, string>; body: Buffer; details: string } | undefined;
  /** A reply Envoy generated itself: ext_proc errors (500/504), no host or unreachable (503). */
  localReply: { status: number; body: Buffer; details: string } | undefined;
  /** Envoy failed the request because of the processor (first failure wins). */
  failure: { kind: FailureKind; message: string } | undefined;
  /** Things Envoy tolerates but the processor should not do. */
  violations: string[];
  stream: { opened: boolean; closedBy?: "envoy" | "server"; serverStatus?: { code: number; details: string } };
  log: LogEntry[];
}

const DEFAULT_TIMEOUT_MS = 10_000;

/** Local reply bodies as Envoy words them. */
const NO_HEALTHY_UPSTREAM = { body: "no healthy upstream", details: "no_healthy_upstream" };
const CONNECT_FAILURE = {
  body: "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure",
  details: "upstream_reset_before_response_started{remote_connection_failure}",
};
const RESET_BEFORE_HEADERS = {
  body: "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
  details: "upstream_reset_before_response_started{connection_termination}",
};

/**
 * One Envoy worker's side of the sidecar connection: its connection pool to the ext_proc cluster
 * (one HTTP/2 connection, more once one is going away or full) carrying one Process stream per
 * exchange. Each client has connections of its own, as each Envoy worker thread has.
 */
export class EnvoyExtProcClient {
  private readonly channel: ExtProcChannel;
  private readonly base: FilterConfig;

  /** `tls`: the cluster's transport socket (TLS, with a client certificate for mTLS); plaintext by default. */
  constructor(address: string, options: { config?: Partial<FilterConfig>; tls?: ChannelTls } = {}) {
    this.base = resolveConfig(FULL_DUPLEX, options.config);
    this.channel = new ExtProcChannel(address, options.tls);
  }

  exchange(spec: ExchangeSpec): Promise<ExchangeResult> {
    return new Exchange(this.channel, resolveConfig(this.base, spec.config), spec).run();
  }

  close(): void {
    this.channel.close();
  }
}

export function formatLog(log: readonly LogEntry[]): string {
  const arrows: Record<LogDirection, string> = { sent: "->", received: "<-", event: "  " };
  return log.map((e) => `${e.ms.toFixed(1).padStart(8)}ms ${arrows[e.direction]} ${e.summary}`).join("\n");
}

interface UpstreamLeg {
  abort: AbortController;
  body: AsyncQueue<Buffer>;
  endRequest: (trailers: Record<string, string> | undefined) => void;
  record: Omit<UpstreamRecord, "body"> & { chunks: Buffer[] };
  responseEnded: boolean;
}

/** One HTTP stream: downstream client -> ext_proc filter -> router -> upstream, and back. */
class Exchange {
  private readonly filter: ExtProcFilter;
  private readonly started = performance.now();
  private finished = false;
  private responseStarted = false;
  private upstream: UpstreamLeg | undefined;
  private deadline: NodeJS.Timeout | undefined;
  private resolve: (result: ExchangeResult) => void = () => undefined;
  private readonly done = new Promise<ExchangeResult>((resolve) => {
    this.resolve = resolve;
  });
  private readonly out = {
    status: undefined as number | undefined,
    headers: {} as Record<string, string>,
    body: [] as Buffer[],
    trailers: undefined as Record<string, string> | undefined,
    reset: undefined as ExchangeResult["reset"],
    immediateResponse: undefined as ExchangeResult["immediateResponse"],
    localReply: undefined as ExchangeResult["localReply"],
    failure: undefined as ExchangeResult["failure"],
    dynamicMetadata: {} as MetadataNamespaces,
    violations: [] as string[],
    log: [] as LogEntry[],
  };

  constructor(
    channel: ExtProcChannel,
    private readonly config: FilterConfig,
    private readonly spec: ExchangeSpec,
  ) {
    const router: StageSink = {
      headers: (headers, endStream) => this.route(headers, endStream),
      data: (chunk, endStream) => this.toUpstream(chunk, endStream),
      trailers: (trailers) => this.endUpstreamRequest(trailers.toRecord()),
    };
    const downstream: StageSink = {
      headers: (headers, endStream) => this.toClientHeaders(headers, endStream),
      data: (chunk, endStream) => this.toClientData(chunk, endStream),
      trailers: (trailers) => this.toClientTrailers(trailers.toRecord()),
    };
    const callbacks: FilterCallbacks = {
      sendLocalReply: (reply) => this.localReply(reply),
      fail: (kind, message) => {
        this.out.failure ??= { kind, message };
      },
      violation: (message) => {
        this.out.violations.push(message);
        this.log("event", `violation: ${message}`);
      },
      log: (direction, summary, message) => this.log(direction, summary, message),
      mergeDynamicMetadata: (namespace, value) => {
        this.out.dynamicMetadata[namespace] = { ...this.out.dynamicMetadata[namespace], ...value };
      },
    };
    this.filter = new ExtProcFilter(
      channel,
      config,
      spec.metadataContext ?? {},
      callbacks,
      new ChainGate(router),
      new ChainGate(downstream),
    );
  }

  run(): Promise<ExchangeResult> {
    const timeoutMs = this.spec.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (timeoutMs > 0 && Number.isFinite(timeoutMs)) this.deadline = setTimeout(() => this.onStall(timeoutMs), timeoutMs);
    const signal = this.spec.signal;
    if (signal?.aborted === true) this.reset("client", "client disconnected");
    signal?.addEventListener("abort", () => this.reset("client", "client disconnected"), { once: true });
    this.decodeRequest().catch((error: unknown) => this.reset("client", `request body failed: ${String(error)}`));
    return this.done;
  }

  // ---- downstream request -> filter ----------------------------------------------------------

  private async decodeRequest(): Promise<void> {
    if (this.checkReset({ at: "request-start" })) return;
    const { request } = this.spec;
    const { headersEndStream, frames } = this.requestFrames();
    this.filter.decodeHeaders(requestHeaders(request, this.fixedBodyLength()), headersEndStream);
    if (this.checkReset({ at: "request-headers" })) return;
    let chunk = 0;
    for await (const frame of frames) {
      if (this.finished) return;
      if (frame.kind === "data") {
        this.filter.decodeData(frame.data, frame.endStream);
        if (this.checkReset({ at: "request-body", chunk: chunk++, endOfStream: frame.endStream })) return;
      } else {
        this.filter.decodeTrailers(frame.trailers);
        if (this.checkReset({ at: "request-trailers" })) return;
      }
    }
    this.checkReset({ at: "request-complete" });
  }

  private requestFrames(): { headersEndStream: boolean; frames: Iterable<Frame> | AsyncIterable<Frame> } {
    const { body, trailers } = this.spec.request;
    const readTrailers = (): HeaderMap | undefined => trailersMap(typeof trailers === "function" ? trailers() : trailers);
    if (body !== undefined && typeof body !== "string" && !Buffer.isBuffer(body)) {
      return { headersEndStream: false, frames: streamedFrames(body, readTrailers) };
    }
    return fixedFrames(Buffer.from(body ?? ""), readTrailers(), this.spec.chunking, this.spec.ending ?? "eos-on-last");
  }

  /** A client that knows its body up front sends content-length (unless trailers follow). */
  private fixedBodyLength(): number | undefined {
    const { body, trailers } = this.spec.request;
    if (trailers !== undefined) return undefined;
    if (typeof body === "string") return Buffer.byteLength(body);
    return Buffer.isBuffer(body) && body.length > 0 ? body.length : undefined;
  }

  // ---- router -> upstream --------------------------------------------------------------------

  /** The router's decodeHeaders: ORIGINAL_DST picks the host from the final headers. */
  private route(headers: HeaderMap, endStream: boolean): void {
    if (this.finished) return;
    const endpoint = pickOriginalDst(headers, this.config);
    if (endpoint === undefined) {
      this.log("event", `router: no host for ${this.config.routingHeader}=${JSON.stringify(headers.get(this.config.routingHeader))}`);
      this.routerReply(503, NO_HEALTHY_UPSTREAM);
      return;
    }
    this.log("event", `router: ORIGINAL_DST -> ${endpoint.address}`);
    const request = this.openUpstreamLeg(endpoint, headers);
    if (this.checkReset({ at: "routed", endpoint: endpoint.address })) return;
    if (endStream) this.upstream?.endRequest(undefined);
    Promise.resolve()
      .then(() => this.spec.upstream(request))
      .then(
        (reply) => this.onUpstreamReply(reply),
        (error: unknown) => {
          this.log("event", `upstream failed before response headers: ${String(error)}`);
          this.routerReply(503, RESET_BEFORE_HEADERS);
        },
      );
  }

  /** Sets up the upstream request whose body the router feeds as the filter releases it. */
  private openUpstreamLeg(endpoint: Endpoint, headers: HeaderMap): UpstreamRequest {
    const record = {
      endpoint: endpoint.address,
      method: headers.first(":method") ?? "GET",
      path: headers.first(":path") ?? "/",
      authority: headers.first(":authority") ?? "",
      headers: headers.toRecord(),
      chunks: [] as Buffer[],
      trailers: undefined as Record<string, string> | undefined,
      complete: false,
    };
    const abort = new AbortController();
    const body = new AsyncQueue<Buffer>();
    let endTrailers: (trailers: Record<string, string> | undefined) => void = () => undefined;
    const trailers = new Promise<Record<string, string> | undefined>((resolve) => {
      endTrailers = resolve;
    });
    abort.signal.addEventListener("abort", () => body.fail(new Error("upstream request reset by Envoy")), { once: true });
    this.upstream = {
      abort,
      body,
      record,
      responseEnded: false,
      endRequest: (last) => {
        record.trailers = last;
        record.complete = true;
        body.end();
        endTrailers(last);
      },
    };
    return {
      endpoint: endpoint.address,
      host: endpoint.host,
      port: endpoint.port,
      method: record.method,
      path: record.path,
      authority: record.authority,
      headers: record.headers,
      headerList: headers.list(),
      body,
      trailers,
      signal: abort.signal,
    };
  }

  private toUpstream(chunk: Buffer, endStream: boolean): void {
    const leg = this.upstream;
    if (this.finished || leg === undefined || leg.record.complete) return;
    if (chunk.length > 0) {
      leg.record.chunks.push(chunk);
      leg.body.push(chunk);
    }
    if (endStream) leg.endRequest(undefined);
  }

  private endUpstreamRequest(trailers: Record<string, string>): void {
    const leg = this.upstream;
    if (this.finished || leg === undefined || leg.record.complete) return;
    leg.endRequest(trailers);
  }

  private onUpstreamReply(reply: UpstreamResponse | "unreachable"): void {
    if (this.finished) return;
    if (reply === "unreachable") {
      this.log("event", "upstream unreachable (connection refused)");
      this.routerReply(503, CONNECT_FAILURE);
      return;
    }
    const headers = new HeaderMap([[":status", String(reply.status)], ...headerPairs(reply.headers)]);
    const endStream = reply.body === undefined && reply.trailers === undefined;
    if (endStream && this.upstream !== undefined) this.upstream.responseEnded = true;
    this.filter.encodeHeaders(headers, endStream);
    if (this.checkReset({ at: "response-headers" }) || endStream) return;
    this.decodeResponseBody(reply).catch((error: unknown) => this.reset("upstream", `upstream reset mid-response: ${String(error)}`));
  }

  /** Upstream body -> filter, each chunk as soon as the upstream yields it. */
  private async decodeResponseBody(reply: UpstreamResponse): Promise<void> {
    // With eos-on-last Envoy must know a chunk is the last one: hold one chunk back.
    const holdBack = reply.ending === "eos-on-last" && reply.trailers === undefined;
    let held: Buffer | undefined;
    let chunk = 0;
    const deliver = (data: Buffer, endStream: boolean): boolean => {
      if (endStream && this.upstream !== undefined) this.upstream.responseEnded = true;
      this.filter.encodeData(data, endStream);
      return this.checkReset({ at: "response-body", chunk: chunk++, endOfStream: endStream }) || this.finished;
    };
    for await (const item of reply.body ?? []) {
      if (this.finished) return;
      const data = typeof item === "string" ? Buffer.from(item) : item;
      if (!holdBack) {
        if (deliver(data, false)) return;
      } else {
        if (held !== undefined && deliver(held, false)) return;
        held = data;
      }
    }
    const trailers = await reply.trailers;
    if (this.finished) return;
    if (trailers === undefined) {
      deliver(held ?? Buffer.alloc(0), true);
      return;
    }
    if (held !== undefined && deliver(held, false)) return;
    if (this.upstream !== undefined) this.upstream.responseEnded = true;
    this.filter.encodeTrailers(new HeaderMap(Object.entries(trailers)));
    this.checkReset({ at: "response-trailers" });
  }

  // ---- filter -> downstream client ---------------------------------------------------------

  private toClientHeaders(headers: HeaderMap, endStream: boolean): void {
    if (this.finished) return;
    this.responseStarted = true;
    const status = Number(headers.first(":status"));
    this.out.status = status;
    this.out.headers = headers.toRecord();
    this.spec.downstream?.onHeaders(status, headers.list().filter(([k]) => !k.startsWith(":")));
    if (this.checkReset({ at: "downstream-headers", status })) return;
    if (endStream) this.complete();
  }

  private toClientData(chunk: Buffer, endStream: boolean): void {
    if (this.finished) return;
    if (chunk.length > 0) {
      this.out.body.push(chunk);
      this.spec.downstream?.onData(chunk);
    }
    if (endStream) this.complete();
  }

  private toClientTrailers(trailers: Record<string, string>): void {
    if (this.finished) return;
    this.out.trailers = trailers;
    this.spec.downstream?.onTrailers(trailers);
    this.complete();
  }

  /**
   * sendLocalReply. Envoy >= 1.34 does not run its own local replies through ext_proc, and after
   * an ImmediateResponse or an ext_proc error there is nothing left to process: the reply goes
   * straight to the client. Once response headers went out, all Envoy can do is reset.
   */
  private localReply(reply: LocalReply): void {
    if (this.finished) return;
    this.log("event", `local reply ${reply.status} (${reply.details})`);
    if (this.responseStarted) {
      this.reset("envoy", `local reply ${reply.status} after the response had started`);
      return;
    }
    const headers = new HeaderMap([
      [":status", String(reply.status)],
      ["content-length", String(reply.body.length)],
    ]);
    if (reply.body.length > 0) headers.add("content-type", "text/plain");
    if (reply.headerMutation !== undefined) {
      const error = applyHeaderMutation(reply.headerMutation, headers, { replacingMessage: false, removeContentLength: false });
      if (error !== undefined) this.log("event", `immediate response header mutation failed: ${error}`);
    }
    const summary = { status: reply.status, body: reply.body, details: reply.details };
    if (reply.fromImmediateResponse) this.out.immediateResponse = { ...summary, headers: headers.toRecord() };
    else this.out.localReply = summary;
    this.toClientHeaders(headers, reply.body.length === 0);
    this.toClientData(reply.body, true);
  }

  private routerReply(status: number, reply: { body: string; details: string }): void {
    this.localReply({ status, body: Buffer.from(reply.body), details: reply.details, fromImmediateResponse: false });
  }

  // ---- ending ------------------------------------------------------------------------------

  private checkReset(point: ResetPoint): boolean {
    if (this.finished) return true;
    if (this.spec.reset?.(point) !== true) return false;
    this.reset("client", `reset injected at ${JSON.stringify(point)}`);
    return true;
  }

  private onStall(timeoutMs: number): void {
    this.out.failure ??= {
      kind: "stalled",
      message: `exchange did not end within ${timeoutMs} ms: ${this.filter.decoding.describe()}; ${this.filter.encoding.describe()}`,
    };
    this.reset("client", "client gave up waiting");
  }

  private reset(by: "client" | "upstream" | "envoy", reason: string): void {
    if (this.finished) return;
    this.out.reset = { by, reason };
    this.log("event", `stream reset by ${by}: ${reason}`);
    this.finish();
    this.spec.downstream?.onReset();
  }

  private complete(): void {
    this.finish();
    this.spec.downstream?.onEnd();
  }

  /** The HTTP stream is over: the filter is destroyed (half-close + cancel), the upstream reset if unfinished. */
  private finish(): void {
    this.finished = true;
    clearTimeout(this.deadline);
    this.filter.onDestroy();
    const leg = this.upstream;
    if (leg !== undefined && !(leg.record.complete && leg.responseEnded)) leg.abort.abort();
    this.resolve(this.snapshot());
  }

  private snapshot(): ExchangeResult {
    const leg = this.upstream;
    return {
      status: this.out.status,
      headers: this.out.headers,
      body: Buffer.concat(this.out.body),
      trailers: this.out.trailers,
      reset: this.out.reset,
      routedTo: leg?.record.endpoint,
      upstreamRequest: leg === undefined ? undefined : upstreamRecord(leg),
      dynamicMetadata: this.out.dynamicMetadata,
      immediateResponse: this.out.immediateResponse,
      localReply: this.out.localReply,
      failure: this.out.failure,
      violations: this.out.violations,
      stream: { ...this.filter.stream },
      log: this.out.log,
    };
  }

  private log(direction: LogDirection, summary: string, message?: ProcessingRequest | ProcessingResponse): void {
    this.out.log.push({ ms: performance.now() - this.started, direction, summary, message });
  }
}

function upstreamRecord(leg: UpstreamLeg): UpstreamRecord {
  const { chunks, ...record } = leg.record;
  return { ...record, body: Buffer.concat(chunks) };
}

/** What Envoy's HTTP connection manager hands the filter chain for a downstream request. */
function requestHeaders(request: ExchangeRequest, contentLength: number | undefined): HeaderMap {
  const given = headerPairs(request.headers);
  const authority = request.authority ?? given.find(([name]) => name === "host")?.[1] ?? "localhost";
  const headers = new HeaderMap([
    [":authority", authority],
    [":path", request.path],
    [":method", request.method.toUpperCase()],
    [":scheme", "http"],
  ]);
  for (const [name, value] of given) if (name !== "host") headers.add(name, value);
  if (contentLength !== undefined && !headers.has("content-length") && !headers.has("transfer-encoding")) {
    headers.add("content-length", String(contentLength));
  }
  if (!headers.has("x-forwarded-proto")) headers.add("x-forwarded-proto", "http");
  if (!headers.has("x-request-id")) headers.add("x-request-id", randomUUID());
  return headers;
}
