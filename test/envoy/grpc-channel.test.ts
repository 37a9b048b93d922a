import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { ProcessingRequest } from "../../src/gen/envoy/service/ext_proc/v3/external_processor.js";
import { ExtProcChannel, type ProcessStatus } from "./grpc-channel.js";

/** A bare HTTP/2 server standing in for the sidecar; each stream is handed to `onStream`. */
async function h2Server(onStream: (stream: http2.ServerHttp2Stream, session: http2.ServerHttp2Session) => void) {
  const server = http2.createServer();
  const sessions: http2.ServerHttp2Session[] = [];
  const goawaysReceived: number[] = [];
  server.on("session", (session) => {
    sessions.push(session);
    session.on("goaway", (code) => goawaysReceived.push(code));
  });
  server.on("stream", (stream) => {
    // A stream the test resets reports it as an error too.
    stream.on("error", () => undefined);
    onStream(stream, stream.session as http2.ServerHttp2Session);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    sessions,
    goawaysReceived,
    close: () => new Promise<void>((resolve) => {
      for (const session of sessions) session.destroy();
      server.close(() => resolve());
    }),
  };
}

const okTrailersOnly = (stream: http2.ServerHttp2Stream): void => {
  stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "0" }, { endStream: true });
};

function openAndWait(channel: ExtProcChannel): Promise<ProcessStatus> {
  return new Promise((resolve) => {
    const stream = channel.open({ onMessage: () => undefined, onClose: resolve });
    stream.write(ProcessingRequest.fromPartial({}));
  });
}

let cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const step of cleanup.reverse()) await step();
  cleanup = [];
});

describe("Envoy's HTTP/2 connection pool to the ext_proc cluster", () => {
  it("answers a GOAWAY with none of its own and opens a new connection for the next stream", async () => {
    // The first stream stays open for a while after the GOAWAY: a client answering with its own would do so then.
    const server = await h2Server((stream, session) => {
      if (server.sessions.indexOf(session) > 0) return okTrailersOnly(stream);
      session.goaway(http2.constants.NGHTTP2_NO_ERROR, 2 ** 31 - 1);
      setTimeout(() => okTrailersOnly(stream), 100);
    });
    cleanup.push(server.close);
    const channel = new ExtProcChannel(server.address);
    cleanup.push(() => channel.close());
    expect(await openAndWait(channel)).toEqual({ code: status.OK, details: "" });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(await openAndWait(channel)).toEqual({ code: status.OK, details: "" });
    expect(server.sessions).toHaveLength(2);
    expect(server.goawaysReceived).toEqual([]);
  });

  it("reads a reset before response headers as the router's 503 (UNAVAILABLE), after them as INTERNAL", async () => {
    // The first stream is reset at once, the second after its response headers.
    const server = await h2Server((stream) => {
      stream.once("data", () => {
        if (stream.id === 1) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
        else {
          stream.respond({ ":status": 200, "content-type": "application/grpc" });
          setTimeout(() => stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR), 20);
        }
      });
    });
    cleanup.push(server.close);
    const channel = new ExtProcChannel(server.address);
    cleanup.push(() => channel.close());
    expect(await openAndWait(channel)).toEqual({
      code: status.UNAVAILABLE,
      details: "upstream connect error or disconnect/reset before headers. reset reason: remote reset",
    });
    expect(await openAndWait(channel)).toEqual({ code: status.INTERNAL, details: "" });
  });

  it("reads a connection it cannot open as the router's 503 naming a connection failure", async () => {
    const server = await h2Server(okTrailersOnly);
    const address = server.address;
    await server.close();
    const channel = new ExtProcChannel(address);
    cleanup.push(() => channel.close());
    const closed = await openAndWait(channel);
    expect(closed.code).toBe(status.UNAVAILABLE);
    expect(closed.details).toMatch(/reset reason: connection failure/);
  });
});
