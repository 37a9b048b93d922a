// What Envoy's router does once ext_proc lets the request go: talk to the endpoint the
// ORIGINAL_DST cluster picked. Tests pass their own Upstream or httpUpstream() for real HTTP/1.1.
import * as http from "node:http";
import { type HeaderInput, headerPairs } from "./header-map.js";

export interface UpstreamRequest {
  /** ip:port from the routing header. */
  endpoint: string;
  host: string;
  port: number;
  method: string;
  path: string;
  authority: string;
  /** Final request headers after mutations, pseudo-headers left out; repeats joined with ",". */
  headers: Record<string, string>;
  /** Final request headers in order, pseudo-headers included, repeats kept. */
  headerList: ReadonlyArray<readonly [string, string]>;
  /** Exactly the bytes Envoy forwards (in FULL_DUPLEX_STREAMED: what the processor echoed), as they come. */
  body: AsyncIterable<Buffer>;
  /** Resolves when the request body has ended. */
  trailers: Promise<Record<string, string> | undefined>;
  /** Aborted when Envoy resets the upstream request (client gone, response done early, ...). */
  signal: AbortSignal;
}

export interface UpstreamResponse {
  status: number;
  headers?: HeaderInput;
  /** Absent: no body. An iterator that throws is an upstream reset in the middle of the response. */
  body?: AsyncIterable<Buffer | string>;
  trailers?: Record<string, string> | Promise<Record<string, string> | undefined>;
  /** How the body ends on Envoy's side; an HTTP/1 upstream ends with an empty frame (the default). */
  ending?: "eos-on-last" | "empty-eos";
}

/** "unreachable" = connection refused: Envoy answers 503 itself. A rejection = reset before headers. */
export type Upstream = (request: UpstreamRequest) => Promise<UpstreamResponse | "unreachable">;

const UNREACHABLE = new Set(["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH"]);
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "trailer", "te"]);

/** Forwards over HTTP/1.1 and streams the response back chunk by chunk as it arrives. */
export function httpUpstream(options: { agent?: http.Agent } = {}): Upstream {
  return (request) =>
    new Promise((resolve, reject) => {
      let answered = false;
      const outgoing = http.request({
        host: request.host,
        port: request.port,
        method: request.method,
        path: request.path,
        headers: outgoingHeaders(request),
        setHost: false,
        agent: options.agent,
      });
      // No error object: once the response has started, its stream (and socket) would re-emit
      // it where nobody listens any more.
      request.signal.addEventListener("abort", () => outgoing.destroy(), { once: true });
      outgoing.on("error", (error: NodeJS.ErrnoException) => {
        // After the response started, errors surface through the response body instead.
        if (answered) return;
        answered = true;
        if (UNREACHABLE.has(error.code ?? "")) resolve("unreachable");
        else reject(error);
      });
      outgoing.on("response", (incoming) => {
        answered = true;
        resolve(toUpstreamResponse(request.method, incoming));
      });
      void sendBody(request, outgoing);
    });
}

/** :authority becomes Host; repeated headers stay separate lines. */
function outgoingHeaders(request: UpstreamRequest): http.OutgoingHttpHeaders {
  const headers: http.OutgoingHttpHeaders = { host: request.authority };
  for (const [name, value] of request.headerList) {
    if (name.startsWith(":")) continue;
    const existing = headers[name];
    headers[name] = existing === undefined ? value : [...(Array.isArray(existing) ? existing : [String(existing)]), value];
  }
  return headers;
}

async function sendBody(request: UpstreamRequest, outgoing: http.ClientRequest): Promise<void> {
  try {
    for await (const chunk of request.body) {
      if (outgoing.destroyed) return;
      outgoing.write(chunk);
    }
    const trailers = await request.trailers;
    if (trailers !== undefined) outgoing.addTrailers(trailers);
    outgoing.end();
  } catch (error) {
    outgoing.destroy(error instanceof Error ? error : new Error(String(error)));
  }
}

function toUpstreamResponse(method: string, incoming: http.IncomingMessage): UpstreamResponse {
  const status = incoming.statusCode ?? 502;
  const headers: Array<[string, string]> = [];
  for (const [name, value] of headerPairs(pairsOf(incoming.rawHeaders))) {
    if (!HOP_BY_HOP.has(name)) headers.push([name, value]);
  }
  const noBody =
    method === "HEAD" || status === 204 || status === 304 || incoming.headers["content-length"] === "0";
  if (noBody) {
    incoming.resume();
    return { status, headers };
  }
  const trailers = new Promise<Record<string, string> | undefined>((resolve) => {
    incoming.on("end", () => {
      const received = headerPairs(pairsOf(incoming.rawTrailers));
      resolve(received.length > 0 ? Object.fromEntries(received) : undefined);
    });
  });
  return { status, headers, body: incoming, trailers, ending: "empty-eos" };
}

function pairsOf(raw: string[]): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i + 1 < raw.length; i += 2) pairs.push([raw[i] as string, raw[i + 1] as string]);
  return pairs;
}
