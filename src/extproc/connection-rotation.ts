import { constants, type ServerHttp2Session } from "node:http2";

/**
 * Node's HTTP/2 server (nghttp2's rapid-reset defence) allows a burst of about 1,000 stream
 * resets per connection, refilled at 33/s, then kills the whole connection with
 * GOAWAY(INTERNAL_ERROR) — and Envoy resets every ext_proc stream when it is done with it.
 * Past a few dozen requests per second every exchange on the connection would then fail.
 * So a connection is retired gracefully (GOAWAY NO_ERROR: its open streams finish, Envoy opens
 * a new connection for new ones) after this many streams, which stays inside the burst
 * whatever the rate. Node ≥ 22 can raise the limit itself; this works on every version.
 */
export const STREAMS_PER_CONNECTION = 900;

/** grpc-js does not expose a call's HTTP/2 session; it sits on the innermost intercepting call. */
function sessionOf(call: object): ServerHttp2Session | undefined {
  let inner: unknown = (call as { call?: unknown }).call;
  for (let depth = 0; typeof inner === "object" && inner !== null && depth < 8; depth++) {
    const session = (inner as { stream?: { session?: ServerHttp2Session } }).stream?.session;
    if (session !== undefined) return session;
    inner = (inner as { nextCall?: unknown }).nextCall;
  }
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
 * 9113's graceful shutdown: first a GOAWAY whose last stream id is the largest possible, so every
 * stream already on its way is still accepted while Envoy opens a new connection for new ones;
 * then a PING, which Envoy answers once it has read the notice. Streams it had queued before may
 * still arrive after that answer (HTTP/2 stacks send control frames first), so the final GOAWAY
 * (`close()`, naming the last stream received) goes only once the connection has had no open
 * stream for QUIET_MS, each check made after the event loop has read its sockets. (Once a GOAWAY
 * is out, nghttp2 no longer counts resets against the connection, so its last streams are safe.)
 */
export class ConnectionRotation {
  private readonly connections = new WeakMap<ServerHttp2Session, Connection>();
  private reported = false;

  constructor(
    private readonly limit: number,
    /** Called once if the session cannot be found (grpc-js internals changed). */
    private readonly unavailable: () => void,
  ) {}

  /** A stream opened; call the function returned when it ends. */
  track(call: object): () => void {
    const session = sessionOf(call);
    if (session === undefined) {
      if (!this.reported) this.unavailable();
      this.reported = true;
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

  private retire(session: ServerHttp2Session, connection: Connection): void {
    session.goaway(constants.NGHTTP2_NO_ERROR, 2 ** 31 - 1);
    setTimeout(() => this.close(session, connection), RETIRE_WITHIN_MS).unref();
    const answered = (): void => {
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
