// A stand-in for an Envoy listener with the ext_proc filter in front of an ORIGINAL_DST cluster:
// every HTTP/1.1 request is run through the processor with EnvoyExtProcClient and forwarded with
// httpUpstream(); the response is written back chunk by chunk as the processor echoes it, so SSE
// streams arrive as they are generated. For the demo and end-to-end tests.
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import {
  EnvoyExtProcClient,
  type ExchangeResult,
  type FilterConfig,
  httpUpstream,
  type MetadataNamespaces,
  type Upstream,
} from "./ext-proc-client.js";
import { ListenError } from "../../src/listen-error.js";

export interface StandInOptions {
  /** host:port of the ext_proc server. */
  extProcAddress: string;
  /** 0 (default) picks a free port. */
  listenPort?: number;
  config?: Partial<FilterConfig>;
  metadataContext?: MetadataNamespaces;
  /** Defaults to httpUpstream(). */
  upstream?: Upstream;
  /** Called with each finished exchange (for assertions and debugging). */
  onExchange?: (result: ExchangeResult) => void;
}

export interface EnvoyStandIn {
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Hop-by-hop headers the HTTP/1 codec consumes; Envoy's host header becomes :authority. */
const NOT_FORWARDED = new Set(["host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"]);

export async function startEnvoyStandIn(options: StandInOptions): Promise<EnvoyStandIn> {
  // One channel for all exchanges, like Envoy's HTTP/2 connection to the sidecar.
  const client = new EnvoyExtProcClient(options.extProcAddress, { config: options.config });
  const upstream = options.upstream ?? httpUpstream();
  const server = http.createServer((req, res) => {
    void handle(client, upstream, options, req, res).then((result) => options.onExchange?.(result));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.listenPort ?? 0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  }).catch((error: unknown) => {
    client.close();
    throw new ListenError("the Envoy stand-in", "127.0.0.1", options.listenPort ?? 0, error);
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          client.close();
          resolve();
        });
      }),
  };
}

function handle(
  client: EnvoyExtProcClient,
  upstream: Upstream,
  options: StandInOptions,
  req: http.IncomingMessage,
  res: http.ServerResponse,
): Promise<ExchangeResult> {
  const disconnect = new AbortController();
  res.on("close", () => {
    if (!res.writableFinished) disconnect.abort();
  });
  const headers: Array<[string, string]> = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    const name = (req.rawHeaders[i] as string).toLowerCase();
    if (!NOT_FORWARDED.has(name)) headers.push([name, req.rawHeaders[i + 1] as string]);
  }
  const hasBody = req.headers["transfer-encoding"] !== undefined || Number(req.headers["content-length"] ?? 0) > 0;
  return client.exchange({
    request: {
      method: req.method ?? "GET",
      path: req.url ?? "/",
      authority: req.headers.host,
      headers,
      // If the exchange ends before the body was read (an ImmediateResponse), leave the socket alone.
      body: hasBody ? (req.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) : undefined,
      trailers: () => Object.fromEntries(Object.entries(req.trailers).filter((e): e is [string, string] => e[1] !== undefined)),
    },
    upstream,
    metadataContext: options.metadataContext,
    signal: disconnect.signal,
    timeoutMs: 0,
    downstream: {
      onHeaders: (status, responseHeaders) => {
        const out: Record<string, string[]> = {};
        for (const [name, value] of responseHeaders) (out[name] ??= []).push(value);
        res.writeHead(status, out);
        res.flushHeaders();
      },
      onData: (chunk) => res.write(chunk),
      onTrailers: (trailers) => res.addTrailers(trailers),
      onEnd: () => res.end(),
      onReset: () => res.destroy(),
    },
  });
}
