import { connect } from "node:net";

/** What came back on one connection: the status line's code, headers, and body as text. */
export interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * Sends these bytes on a new connection and reads until the server closes it. Unlike fetch, the
 * request target reaches the server exactly as written. With `endAfter`, this side of the
 * connection ends after the bytes (Node's server then drops a request still being answered).
 * Undefined when nothing (or no status line) came back within the timeout, or the connection failed.
 */
export function rawExchange(port: number, bytes: Buffer | string, { endAfter = false, timeoutMs = 5000 } = {}): Promise<RawAnswer | undefined> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", () => undefined);
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(parseAnswer(Buffer.concat(chunks).toString("utf8")));
    });
    if (endAfter) socket.end(bytes);
    else socket.write(bytes);
  });
}

/** One request with `Connection: close`, the target and body sent as given. */
export function rawRequest(port: number, method: string, target: string | Buffer, body?: string | Buffer): Promise<RawAnswer | undefined> {
  const payload = body === undefined ? Buffer.alloc(0) : Buffer.from(body);
  const head = `\r\nHost: 127.0.0.1\r\nConnection: close\r\ncontent-type: application/json\r\ncontent-length: ${payload.length}\r\n\r\n`;
  return rawExchange(port, Buffer.concat([Buffer.from(`${method} `), Buffer.from(target), Buffer.from(" HTTP/1.1"), Buffer.from(head), payload]));
}

function parseAnswer(text: string): RawAnswer | undefined {
  const match = /^HTTP\/1\.1 (\d{3})[^\r]*\r\n/.exec(text);
  if (match === null) return undefined;
  const end = text.indexOf("\r\n\r\n");
  const headers: Record<string, string> = {};
  for (const line of text.slice(match[0].length, end === -1 ? undefined : end).split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
  }
  const body = end === -1 ? "" : text.slice(end + 4);
  return { status: Number(match[1]), headers, body: headers["transfer-encoding"] === "chunked" ? dechunked(body) : body };
}

function dechunked(body: string): string {
  let text = "";
  let at = 0;
  for (;;) {
    const lineEnd = body.indexOf("\r\n", at);
    const size = Number.parseInt(body.slice(at, lineEnd), 16);
    if (lineEnd === -1 || !(size > 0)) return text;
    text += body.slice(lineEnd + 2, lineEnd + 2 + size);
    at = lineEnd + 2 + size + 2;
  }
}
