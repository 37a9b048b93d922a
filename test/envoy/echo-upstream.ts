// A tiny HTTP/1.1 upstream for tests: records each request and streams back an SSE-like echo.
import * as http from "node:http";
import type { AddressInfo } from "node:net";

export interface ReceivedRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  trailers: Record<string, string>;
}

export interface EchoUpstream {
  /** ip:port, what a processor puts in x-gateway-destination-endpoint. */
  endpoint: string;
  readonly requests: ReceivedRequest[];
  close(): Promise<void>;
}

/** Request header asking the upstream to end its response with trailers. */
export const WANT_TRAILERS = "x-want-trailers";
export const RESPONSE_TRAILERS = { "x-upstream-trailer": "done" };

/** The response body for a request body: three writes, so the response comes in pieces. */
export function echoOf(body: Buffer): Buffer[] {
  return [Buffer.from("data: start\n\n"), body, Buffer.from("data: [DONE]\n\n")];
}

export async function startEchoUpstream(): Promise<EchoUpstream> {
  const requests: ReceivedRequest[] = [];
  const server = http.createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    try {
      for await (const chunk of req) chunks.push(chunk as Buffer);
    } catch {
      return; // the proxy reset the request: nothing to answer
    }
    const body = Buffer.concat(chunks);
    requests.push({
      method: req.method ?? "",
      url: req.url ?? "",
      headers: req.headers,
      body,
      trailers: Object.fromEntries(Object.entries(req.trailers).filter((e): e is [string, string] => e[1] !== undefined)),
    });
    res.writeHead(200, { "content-type": "text/event-stream" });
    for (const piece of echoOf(body)) {
      res.write(piece);
      await new Promise((resolve) => setImmediate(resolve));
    }
    if (req.headers[WANT_TRAILERS] !== undefined) res.addTrailers(RESPONSE_TRAILERS);
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
