// Envoy's side of the connection to the ext_proc cluster: its gRPC async client (AsyncStreamImpl in
// source/common/grpc/async_client_impl.cc) over its HTTP/2 connection pool and codec
// (source/common/http/http2/codec_impl.cc, conn_pool_base.cc). What it keeps from Envoy:
// - the codec hands every frame it serializes to the connection's user-space write buffer at once
//   (ConnectionImpl::onSend writes it all and returns its length), so a stream's HEADERS are on
//   their way the moment the stream is opened, however slowly the peer reads;
// - connections set TCP_NODELAY, as all of Envoy's do;
// - a connection that received a GOAWAY sends none back: it is closed once its last stream ends;
// - the pool stops opening streams on a connection that received a GOAWAY, or that has as many
//   streams open as the peer's SETTINGS_MAX_CONCURRENT_STREAMS allow, and opens a new one;
// - a stream reset before response headers ends, through the router, as a 503 local reply, which
//   the async client reads as UNAVAILABLE; a reset after them as INTERNAL; a stream Envoy closes
//   itself is half-closed, then reset with NO_ERROR.
import * as http2 from "node:http2";
import * as net from "node:net";
import { Duplex } from "node:stream";
import * as tls from "node:tls";
import { status as GrpcStatus } from "@grpc/grpc-js";
import { ExternalProcessorService, ProcessingRequest, ProcessingResponse } from "../../src/gen/envoy/service/ext_proc/v3/external_processor.js";

/** The cluster's transport socket: an UpstreamTlsContext trusting `ca`, presenting `cert`/`key` for mTLS. */
export interface ChannelTls {
  ca: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
  /** The SNI sent and the name the server's certificate must carry. */
  servername: string;
}

export interface ProcessStatus {
  code: number;
  details: string;
}

export interface ProcessCallbacks {
  onMessage(response: ProcessingResponse): void;
  /** Called once, unless Envoy closed the stream itself first. */
  onClose(status: ProcessStatus): void;
}

export interface ProcessStream {
  write(request: ProcessingRequest): void;
  /** ExternalProcessorStreamImpl::close: half-close, then reset. */
  close(): void;
}

const MAX_STREAM_ID = 2 ** 31 - 1;
/** The :authority Envoy's gRPC client sends: the cluster's name (envoy_grpc.authority unset). */
const AUTHORITY = "metadata-center";

const PREFACE_BYTES = 24;
const FRAME_HEADER_BYTES = 9;
const HEADERS_FRAME = 0x1;
const GOAWAY_FRAME = 0x7;

/**
 * Reads the client's outgoing HTTP/2 frames as they leave: notes the stream of each HEADERS frame,
 * and drops GOAWAY frames. Node's client answers a GOAWAY with one of its own at once, and Node's
 * server answers that by closing, refusing the streams still on their way; Envoy's client codec
 * sends none: it drains the connection and closes the socket when its last stream is done.
 */
class OutgoingFrames {
  private preface = PREFACE_BYTES;
  private readonly header = Buffer.alloc(FRAME_HEADER_BYTES);
  private headerFilled = 0;
  private payloadLeft = 0;
  private dropping = false;

  constructor(private readonly onHeadersSent: (streamId: number) => void) {}

  /** The parts of `chunk` to send on. */
  filter(chunk: Buffer): Buffer[] {
    const kept: Buffer[] = [];
    let at = 0;
    if (this.preface > 0) {
      const take = Math.min(this.preface, chunk.length);
      kept.push(chunk.subarray(0, take));
      this.preface -= take;
      at = take;
    }
    while (at < chunk.length) {
      if (this.payloadLeft > 0) {
        const take = Math.min(this.payloadLeft, chunk.length - at);
        if (!this.dropping) kept.push(chunk.subarray(at, at + take));
        this.payloadLeft -= take;
        at += take;
        continue;
      }
      const take = Math.min(FRAME_HEADER_BYTES - this.headerFilled, chunk.length - at);
      chunk.copy(this.header, this.headerFilled, at, at + take);
      this.headerFilled += take;
      at += take;
      if (this.headerFilled < FRAME_HEADER_BYTES) break;
      this.headerFilled = 0;
      this.payloadLeft = this.header.readUIntBE(0, 3);
      const type = this.header[3];
      this.dropping = type === GOAWAY_FRAME;
      if (type === HEADERS_FRAME) this.onHeadersSent(this.header.readUInt32BE(5) & 0x7fffffff);
      if (!this.dropping) kept.push(Buffer.from(this.header));
    }
    return kept;
  }
}

/** Envoy's connection write buffer: the codec's writes complete at once and the socket drains behind them. */
function envoyConnection(socket: net.Socket, outgoing: OutgoingFrames): Duplex {
  const duplex = new Duplex({
    write(chunk: Buffer, _encoding, done) {
      for (const part of outgoing.filter(chunk)) socket.write(part);
      done();
    },
    read() {
      socket.resume();
    },
    final(done) {
      socket.end();
      done();
    },
    destroy(error, done) {
      socket.destroy();
      done(error);
    },
  });
  socket.on("data", (chunk: Buffer) => {
    if (!duplex.push(chunk)) socket.pause();
  });
  socket.on("end", () => duplex.push(null));
  socket.on("error", (error) => duplex.destroy(error));
  socket.on("close", () => duplex.destroy());
  return duplex;
}

interface Connection {
  session: http2.ClientHttp2Session;
  /** The TCP (and TLS) handshake completed. */
  connected: boolean;
  draining: boolean;
  streams: Set<GrpcStream>;
  /** Client stream ids rise and their HEADERS leave in that order: every stream up to this one is on the wire. */
  highestSentStream: number;
}

/** The reset reason Envoy's router names in its local reply. */
function resetReason(connection: Connection, rstCode: number): string {
  if (!connection.connected) return "connection failure";
  if (rstCode === http2.constants.NGHTTP2_REFUSED_STREAM) return "remote refused stream reset";
  return connection.session.destroyed ? "connection termination" : "remote reset";
}

/** One Envoy worker's connections to the ext_proc cluster, each carrying many Process streams. */
export class ExtProcChannel {
  private readonly connections: Connection[] = [];
  private closed = false;

  constructor(
    private readonly address: string,
    private readonly tlsContext?: ChannelTls,
  ) {}

  open(callbacks: ProcessCallbacks): ProcessStream {
    const stream = new GrpcStream(this, callbacks);
    stream.start();
    return stream;
  }

  /** Drains every connection: open streams finish, nothing new is opened. */
  close(): void {
    this.closed = true;
    for (const connection of this.connections.splice(0)) connection.session.close();
  }

  /** ConnPoolImplBase: a connection that can take one more stream, or a new one. */
  attach(stream: GrpcStream): Connection {
    if (this.closed) throw new Error("the channel was closed");
    const connection = this.connections.find((c) => !c.draining && c.streams.size < this.streamLimit(c)) ?? this.connect();
    connection.streams.add(stream);
    return connection;
  }

  private streamLimit(connection: Connection): number {
    return connection.session.remoteSettings.maxConcurrentStreams ?? MAX_STREAM_ID;
  }

  private connect(): Connection {
    const [host, port] = splitAddress(this.address);
    const options = this.tlsContext;
    const tcp = net.connect({ host, port, noDelay: true });
    const socket =
      options === undefined
        ? tcp
        : tls.connect({ socket: tcp, ca: options.ca, cert: options.cert, key: options.key, servername: options.servername, ALPNProtocols: ["h2"] });
    const outgoing = new OutgoingFrames((streamId) => {
      connection.highestSentStream = Math.max(connection.highestSentStream, streamId);
    });
    const session = http2.connect(`http://${this.address}`, {
      createConnection: () => envoyConnection(socket, outgoing),
      // Until the peer's SETTINGS say otherwise, Envoy assumes its own max_concurrent_streams (2^31 - 1).
      peerMaxConcurrentStreams: MAX_STREAM_ID,
      // Envoy's codec has no cap on a connection's memory (Node's default of 10 MB refuses the
      // response headers of a stream with a large body still queued behind flow control).
      maxSessionMemory: Number.MAX_SAFE_INTEGER,
    });
    const connection: Connection = { session, connected: false, draining: false, streams: new Set(), highestSentStream: 0 };
    socket.once(options === undefined ? "connect" : "secureConnect", () => {
      connection.connected = true;
    });
    const retire = (): void => {
      connection.draining = true;
      const index = this.connections.indexOf(connection);
      if (index >= 0) this.connections.splice(index, 1);
    };
    session.on("goaway", () => {
      retire();
      // Envoy's codec would have sent these before reading the GOAWAY; here they were still queued.
      for (const stream of [...connection.streams]) stream.onGoaway(connection.highestSentStream);
    });
    session.on("close", retire);
    // Failures reach the streams (as resets); the session's own error needs a listener.
    session.on("error", retire);
    this.connections.push(connection);
    return connection;
  }
}

function splitAddress(address: string): [string, number] {
  const colon = address.lastIndexOf(":");
  return [address.slice(0, colon).replace(/^\[|\]$/g, ""), Number(address.slice(colon + 1))];
}

/** gRPC length-prefixed messages, reassembled across DATA frames. */
class MessageReader {
  private chunks: Buffer[] = [];
  private buffered = 0;

  /** The messages completed by this chunk, or an error for a frame Envoy's decoder rejects. */
  push(chunk: Buffer): Buffer[] | Error {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const messages: Buffer[] = [];
    while (this.buffered >= 5) {
      const head = this.peek(5);
      if (head[0] !== 0) return new Error(`compressed gRPC frame (flag ${head[0]}): no decompressor configured`);
      const length = head.readUInt32BE(1);
      if (this.buffered < 5 + length) break;
      messages.push(this.take(5 + length).subarray(5));
    }
    return messages;
  }

  private peek(bytes: number): Buffer {
    const first = this.chunks[0];
    if (first !== undefined && first.length >= bytes) return first;
    const joined = Buffer.concat(this.chunks);
    this.chunks = [joined];
    return joined;
  }

  private take(bytes: number): Buffer {
    const joined = this.peek(bytes);
    const taken = joined.subarray(0, bytes);
    const rest = joined.subarray(bytes);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered -= bytes;
    return taken;
  }
}

function frame(request: ProcessingRequest): Buffer {
  const message = ProcessingRequest.encode(request).finish();
  const framed = Buffer.allocUnsafe(5 + message.length);
  framed[0] = 0;
  framed.writeUInt32BE(message.length, 1);
  framed.set(message, 5);
  return framed;
}

/** Grpc::Utility::httpToGrpcStatus. */
function httpToGrpcStatus(httpStatus: number): number {
  switch (httpStatus) {
    case 400:
      return GrpcStatus.INTERNAL;
    case 401:
      return GrpcStatus.UNAUTHENTICATED;
    case 403:
      return GrpcStatus.PERMISSION_DENIED;
    case 404:
      return GrpcStatus.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return GrpcStatus.UNAVAILABLE;
    default:
      return GrpcStatus.UNKNOWN;
  }
}

const percentDecoded = (text: string): string => {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
};

/** One Process stream: Envoy's AsyncStreamImpl over one HTTP/2 stream of the pool. */
class GrpcStream implements ProcessStream {
  private stream: http2.ClientHttp2Stream | undefined;
  private connection: Connection | undefined;
  private readonly reader = new MessageReader();
  private responseStarted = false;
  private done = false;
  /** Every frame written, until the stream's HEADERS are known to be on the wire. */
  private unsent: Buffer[] | undefined = [];

  constructor(
    private readonly channel: ExtProcChannel,
    private readonly callbacks: ProcessCallbacks,
  ) {}

  write(request: ProcessingRequest): void {
    if (this.done) return;
    const framed = frame(request);
    this.unsent?.push(framed);
    this.stream?.write(framed);
  }

  close(): void {
    if (this.done) return;
    this.done = true;
    this.unsent = undefined;
    const stream = this.stream;
    if (stream === undefined) return;
    stream.end();
    stream.close(http2.constants.NGHTTP2_NO_ERROR);
  }

  /** Its connection got a GOAWAY: if the stream never left, it goes on a new connection. */
  onGoaway(highestSentStream: number): void {
    const stream = this.stream;
    if (this.done || stream?.id === undefined) return;
    if (stream.id <= highestSentStream) {
      this.unsent = undefined;
      return;
    }
    this.leave();
    stream.removeAllListeners();
    stream.on("error", () => undefined);
    stream.close(http2.constants.NGHTTP2_CANCEL);
    this.start();
  }

  start(): void {
    let connection: Connection;
    let stream: http2.ClientHttp2Stream;
    try {
      connection = this.channel.attach(this);
      this.connection = connection;
      stream = connection.session.request(
        {
          ":method": "POST",
          ":path": ExternalProcessorService.process.path,
          ":authority": AUTHORITY,
          ":scheme": "http",
          "content-type": "application/grpc",
          te: "trailers",
        },
        { endStream: false },
      );
    } catch (error) {
      this.leave();
      this.resetBeforeHeaders(`connection failure, ${String(error)}`);
      return;
    }
    this.stream = stream;
    stream.on("response", (headers, flags) => this.onResponseHeaders(headers, (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0));
    stream.on("data", (chunk: Buffer) => this.onData(chunk));
    stream.on("trailers", (trailers) => this.onTrailers(trailers));
    // A reset also closes the stream; the close says what happened.
    stream.on("error", () => undefined);
    stream.on("close", () => {
      this.leave();
      if (this.responseStarted) this.finish({ code: GrpcStatus.INTERNAL, details: "" });
      else this.resetBeforeHeaders(resetReason(connection, stream.rstCode));
    });
    for (const framed of this.unsent ?? []) stream.write(framed);
  }

  private leave(): void {
    this.connection?.streams.delete(this);
    this.connection = undefined;
  }

  private onResponseHeaders(headers: http2.IncomingHttpHeaders, endStream: boolean): void {
    this.responseStarted = true;
    this.unsent = undefined;
    const httpStatus = Number(headers[":status"]);
    if (httpStatus !== 200) {
      if (endStream && headers["grpc-status"] !== undefined) this.onTrailers(headers);
      else this.fail(httpToGrpcStatus(httpStatus), "");
      return;
    }
    if (endStream) this.onTrailers(headers);
  }

  private onData(chunk: Buffer): void {
    if (this.done) return;
    const messages = this.reader.push(chunk);
    if (messages instanceof Error) {
      this.fail(GrpcStatus.INTERNAL, messages.message);
      return;
    }
    for (const message of messages) {
      let response: ProcessingResponse;
      try {
        response = ProcessingResponse.decode(message);
      } catch {
        this.fail(GrpcStatus.INTERNAL, "");
        return;
      }
      this.callbacks.onMessage(response);
      if (this.done) return;
    }
  }

  private onTrailers(trailers: http2.IncomingHttpHeaders): void {
    const code = Number(trailers["grpc-status"]);
    const message = trailers["grpc-message"];
    if (!Number.isInteger(code) || code < 0 || code > 16) {
      this.finish({ code: GrpcStatus.UNKNOWN, details: "bad gRPC trailers" });
      return;
    }
    this.finish({ code, details: typeof message === "string" ? percentDecoded(message) : "" });
  }

  /** The router's local reply for a stream reset before response headers, as the async client reads it. */
  private resetBeforeHeaders(reason: string): void {
    this.finish({ code: GrpcStatus.UNAVAILABLE, details: `upstream connect error or disconnect/reset before headers. reset reason: ${reason}` });
  }

  /** AsyncStreamImpl::streamError: report, then reset the stream. */
  private fail(code: number, details: string): void {
    this.finish({ code, details });
    this.stream?.close(http2.constants.NGHTTP2_NO_ERROR);
  }

  private finish(status: ProcessStatus): void {
    if (this.done) return;
    this.done = true;
    this.unsent = undefined;
    this.callbacks.onClose(status);
  }
}
