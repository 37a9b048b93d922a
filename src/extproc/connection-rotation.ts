import { constants, type ServerHttp2Session } from "node:http2";
import { Socket } from "node:net";
import { Duplex } from "node:stream";
import { TLSSocket } from "node:tls";
import { http2StreamOf } from "./call-stream.js";

/**
 * Node's HTTP/2 server (nghttp2's rapid-reset defence) allows a burst of about 1,000 stream
 * resets per connection, refilled at 33/s, then kills the whole connection with
 * GOAWAY(INTERNAL_ERROR) — and Envoy resets every ext_proc stream when it is done with it.
 * Past a few dozen requests per second every exchange on the connection would then fail.
 * So a connection is retired gracefully (GOAWAY NO_ERROR: its open streams finish, Envoy opens
 * a new connection for new ones) after this many streams, which stays inside the burst whatever
 * the rate, with room for the resets that still arrive until Envoy has answered the notice (the
 * defence stops counting only then). Node ≥ 22 can raise the limit itself; this works on every
 * version.
 */
export const STREAMS_PER_CONNECTION = 500;

/**
 * RFC 9113's shutdown notice: GOAWAY naming the largest stream id, NO_ERROR. It is written onto the
 * connection's socket, past nghttp2, because Node offers only `session.goaway()`, after which
 * nghttp2 silently ignores every new stream (nghttp2_submit_shutdown_notice is not exposed): the
 * streams Envoy sent before it read the notice would be refused by the final GOAWAY.
 */
const SHUTDOWN_NOTICE = (() => {
  const frame = Buffer.alloc(17);
  frame.writeUIntBE(8, 0, 3);
  frame[3] = 0x7;
  frame.writeUInt32BE(2 ** 31 - 1, 9);
  frame.writeUInt32BE(constants.NGHTTP2_NO_ERROR, 13);
  return frame;
})();

/** Streams that carry a TLS connection's bytes between its socket and nghttp2 (see `carry`). */
const carriers = new WeakSet<Duplex>();

/**
 * A TLS connection's bytes, passed through JavaScript, for grpc-js's connection injector. nghttp2
 * then writes each batch of whole frames into this stream in one go, so a notice written here
 * lands between frames; written to the TLS socket itself it would break Node (one write at a time).
 */
export function carry(socket: TLSSocket): Duplex {
  const carrier = new Duplex({
    write(chunk: Buffer, _encoding, done) {
      socket.write(chunk, (error) => done(error ?? null));
    },
    read() {
      socket.resume();
    },
    final(done) {
      socket.end(done);
    },
    destroy(error, done) {
      socket.destroy(error ?? undefined);
      done(error);
    },
  });
  socket.on("data", (chunk: Buffer) => {
    if (!carrier.push(chunk)) socket.pause();
  });
  socket.on("end", () => carrier.push(null));
  socket.on("error", (error) => carrier.destroy(error));
  socket.on("close", () => carrier.destroy());
  carriers.add(carrier);
  return carrier;
}

/**
 * Where the notice can be written without splitting a frame: a plaintext connection's TCP socket
 * (its writes queue in libuv behind nghttp2's, each whole), or a TLS connection's carrier. Node
 * keeps the socket under a symbol (`session.socket` is a proxy that refuses writes), wrapped in a
 * JSStreamSocket whose `stream` is the carrier when the connection was injected.
 */
function noticeTarget(session: ServerHttp2Session): Duplex | undefined {
  const key = Object.getOwnPropertySymbols(session).find((symbol) => symbol.description === "socket");
  const socket: unknown = key === undefined ? undefined : (session as unknown as Record<symbol, unknown>)[key];
  const inner: unknown = typeof socket === "object" && socket !== null ? (socket as { stream?: unknown }).stream : undefined;
  if (inner instanceof Duplex && carriers.has(inner)) return inner;
  if (socket instanceof Socket && !(socket instanceof TLSSocket) && inner === undefined) return socket;
  return undefined;
}

/** A retired connection closes once it has been this long without an open stream. */
const QUIET_MS = 200;
/** Closed (gracefully: open streams still finish) after this long whatever arrives, so a client that ignores the notice cannot keep it. */
const RETIRE_WITHIN_MS = 30_000;

interface Connection {
  /** Streams the connection has carried. */
  streams: number;
  /** Streams open on it now. */
  open: number;
  /** The shutdown notice was sent and Envoy has answered the PING after it. */
  noticed: boolean;
  closed: boolean;
}

/**
 * Counts streams per connection and retires each connection after `limit` streams, with RFC
 * 9113's graceful shutdown: first the shutdown notice (a GOAWAY whose last stream id is the
 * largest possible), so every stream already on its way is still accepted while Envoy opens a new
 * connection for new ones; then a PING, which Envoy answers once it has read the notice. The final
 * GOAWAY (`close()`, naming the last stream received) goes only once the connection has had no
 * open stream for QUIET_MS, each check made after the event loop has read its sockets.
 */
export class ConnectionRotation {
  private readonly connections = new WeakMap<ServerHttp2Session, Connection>();
  private readonly reported = new Set<string>();

  constructor(
    private readonly limit: number,
    /** Called once per missing piece if grpc-js or Node internals changed: "session" or "socket". */
    private readonly unavailable: (missing: "session" | "socket") => void,
  ) {}

  /** A stream opened; call the function returned when it ends. */
  track(call: object): () => void {
    const session = http2StreamOf(call)?.session as ServerHttp2Session | undefined;
    if (session === undefined) {
      this.report("session");
      return () => undefined;
    }
    let connection = this.connections.get(session);
    if (connection === undefined) {
      connection = { streams: 0, open: 0, noticed: false, closed: false };
      this.connections.set(session, connection);
    }
    const tracked = connection;
    tracked.streams += 1;
    tracked.open += 1;
    if (tracked.streams === this.limit && !session.closed) this.retire(session, tracked);
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      tracked.open -= 1;
      if (tracked.noticed && tracked.open === 0) this.closeWhenQuiet(session, tracked);
    };
  }

  private report(missing: "session" | "socket"): void {
    if (this.reported.has(missing)) return;
    this.reported.add(missing);
    this.unavailable(missing);
  }

  private retire(session: ServerHttp2Session, connection: Connection): void {
    const target = noticeTarget(session);
    const written = target !== undefined && target.writable;
    if (written) target.write(SHUTDOWN_NOTICE);
    else this.report("socket");
    // Once Envoy has answered the PING, every stream it sent before reading the notice has been
    // read: now nghttp2 may learn of the GOAWAY (it then stops counting resets).
    const tellNghttp2 = (): void => {
      if (!session.closed && !session.destroyed) session.goaway(constants.NGHTTP2_NO_ERROR, 2 ** 31 - 1);
    };
    if (!written) tellNghttp2();
    setTimeout(() => this.close(session, connection), RETIRE_WITHIN_MS).unref();
    const answered = (): void => {
      if (written) tellNghttp2();
      connection.noticed = true;
      if (connection.open === 0) this.closeWhenQuiet(session, connection);
    };
    if (!session.ping(answered)) answered();
  }

  private closeWhenQuiet(session: ServerHttp2Session, connection: Connection): void {
    const seen = connection.streams;
    setTimeout(
      () =>
        setImmediate(() => {
          if (connection.open === 0 && connection.streams === seen) this.close(session, connection);
        }),
      QUIET_MS,
    ).unref();
  }

  private close(session: ServerHttp2Session, connection: Connection): void {
    if (connection.closed) return;
    connection.closed = true;
    if (!session.closed && !session.destroyed) session.close();
  }
}
