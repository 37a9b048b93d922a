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

/** How long Envoy gets after the shutdown notice to stop opening streams on the connection. */
const NOTICE_MS = 1000;

/**
 * RFC 9113's graceful shutdown: first a GOAWAY whose last stream id is the largest possible, so
 * streams already on their way are still accepted while Envoy moves new ones to a new
 * connection; then, a moment later, the real GOAWAY, after which the open streams finish.
 */
function retire(session: ServerHttp2Session): void {
  session.goaway(constants.NGHTTP2_NO_ERROR, 2 ** 31 - 1);
  setTimeout(() => {
    if (!session.closed && !session.destroyed) session.close();
  }, NOTICE_MS).unref();
}

/** Counts streams per connection and retires each connection after `limit` streams. */
export class ConnectionRotation {
  private readonly streams = new WeakMap<ServerHttp2Session, number>();
  private reported = false;

  constructor(
    private readonly limit: number,
    /** Called once if the session cannot be found (grpc-js internals changed). */
    private readonly unavailable: () => void,
  ) {}

  track(call: object): void {
    const session = sessionOf(call);
    if (session === undefined) {
      if (!this.reported) this.unavailable();
      this.reported = true;
      return;
    }
    const count = (this.streams.get(session) ?? 0) + 1;
    this.streams.set(session, count);
    if (count === this.limit && !session.closed) retire(session);
  }
}
