// Small hand-written ext_proc servers for testing the Envoy stand-in itself (and for end-to-end
// tests that need a known-good processor): a well-behaved echo-and-route processor, and the
// plumbing to write misbehaving ones in a few lines.
import * as grpc from "@grpc/grpc-js";
import type { HeaderValueOption } from "../../src/gen/envoy/config/core/v3/base.js";
import { ProcessingMode_BodySendMode } from "../../src/gen/envoy/extensions/filters/http/ext_proc/v3/processing_mode.js";
import {
  type DeepPartial,
  ExternalProcessorService,
  type ProcessingRequest,
  ProcessingResponse,
} from "../../src/gen/envoy/service/ext_proc/v3/external_processor.js";

export type ProcessCall = grpc.ServerDuplexStream<ProcessingRequest, ProcessingResponse>;

/** What the server saw on one Process stream. */
export interface ObservedStream {
  readonly received: ProcessingRequest[];
  /** The client half-closed (Envoy does this right before cancelling). */
  halfClosed: boolean;
  /** The client cancelled the stream (how Envoy ends every stream it closes). */
  cancelled: boolean;
  /** Resolves once the stream is over on the server. */
  readonly closed: Promise<void>;
}

export interface ProcessorServer {
  address: string;
  readonly streams: ObservedStream[];
  close(): Promise<void>;
}

export type ProcessorHandler = (call: ProcessCall, observed: ObservedStream) => void;

export async function startProcessor(handler: ProcessorHandler): Promise<ProcessorServer> {
  const server = new grpc.Server();
  const streams: ObservedStream[] = [];
  server.addService(ExternalProcessorService, {
    process: (call: ProcessCall) => {
      let markClosed: () => void = () => undefined;
      const observed: ObservedStream = {
        received: [],
        halfClosed: false,
        cancelled: false,
        closed: new Promise<void>((resolve) => {
          markClosed = resolve;
        }),
      };
      streams.push(observed);
      // Registered before the handler's own listeners, so `received` is complete when they run.
      call.on("data", (message: ProcessingRequest) => observed.received.push(message));
      call.on("end", () => {
        observed.halfClosed = true;
      });
      call.on("cancelled", () => {
        observed.cancelled = true;
        markClosed();
      });
      call.on("close", () => markClosed());
      call.on("error", () => undefined);
      handler(call, observed);
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error === null ? resolve(bound) : reject(error),
    ),
  );
  return {
    address: `127.0.0.1:${port}`,
    streams,
    close: () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => resolve());
        setTimeout(() => server.forceShutdown(), 500).unref();
      }),
  };
}

export function reply(call: ProcessCall, response: DeepPartial<ProcessingResponse>): void {
  call.write(ProcessingResponse.fromPartial(response));
}

/** A header set the way the sidecar must: value in raw_value only. */
export function rawHeader(key: string, value: string, append?: boolean): DeepPartial<HeaderValueOption> {
  return { header: { key, rawValue: Buffer.from(value) }, append };
}

export function routeTo(endpoint: string): {
  headerMutation: { setHeaders: Array<DeepPartial<HeaderValueOption>> };
  dynamicMetadata: Record<string, Record<string, string>>;
} {
  return {
    headerMutation: { setHeaders: [rawHeader("x-gateway-destination-endpoint", endpoint)] },
    dynamicMetadata: { "envoy.lb": { "x-gateway-destination-endpoint": endpoint } },
  };
}

export interface EchoOptions {
  /** ip:port written into x-gateway-destination-endpoint; undefined = leave the header alone. */
  endpoint: string | undefined;
  /** BUFFERED requests: route in the headers reply (default) or in the body reply. */
  routeIn?: "headers" | "body";
  /** FULL_DUPLEX echo piece size (default 62,000 bytes). */
  echoChunkSize?: number;
}

type Mode = ProcessingMode_BodySendMode;

/**
 * A well-behaved processor in every body mode (it reads protocol_config): routes, echoes bodies
 * unchanged. In FULL_DUPLEX_STREAMED it holds the headers reply until the request body is
 * complete, as the endpoint picker does, then echoes the body re-cut into its own pieces.
 */
export function echoAndRoute(options: EchoOptions): ProcessorHandler {
  const pieceSize = options.echoChunkSize ?? 62_000;
  const route: Partial<ReturnType<typeof routeTo>> = options.endpoint === undefined ? {} : routeTo(options.endpoint);
  return (call) => {
    let requestMode: Mode = ProcessingMode_BodySendMode.FULL_DUPLEX_STREAMED;
    let responseMode: Mode = ProcessingMode_BodySendMode.FULL_DUPLEX_STREAMED;
    const held: Buffer[] = [];
    let headersReplied = false;

    const releaseRequest = (endOfStream: boolean): void => {
      reply(call, { requestHeaders: { response: { headerMutation: route.headerMutation } }, dynamicMetadata: route.dynamicMetadata });
      headersReplied = true;
      const body = Buffer.concat(held.splice(0));
      const pieces: Buffer[] = [];
      for (let offset = 0; offset < body.length; offset += pieceSize) pieces.push(body.subarray(offset, offset + pieceSize));
      if (pieces.length === 0 && endOfStream) pieces.push(Buffer.alloc(0));
      pieces.forEach((piece, i) => {
        const last = endOfStream && i === pieces.length - 1;
        reply(call, { requestBody: { response: { bodyMutation: { streamedResponse: { body: piece, endOfStream: last } } } } });
      });
    };

    call.on("data", (message: ProcessingRequest) => {
      if (message.protocolConfig !== undefined) {
        requestMode = message.protocolConfig.requestBodyMode;
        responseMode = message.protocolConfig.responseBodyMode;
      }
      const duplexRequest = requestMode === ProcessingMode_BodySendMode.FULL_DUPLEX_STREAMED;
      const duplexResponse = responseMode === ProcessingMode_BodySendMode.FULL_DUPLEX_STREAMED;
      if (message.requestHeaders !== undefined) {
        if (duplexRequest && !message.requestHeaders.endOfStream) return; // wait for the body
        const routeLater = options.routeIn === "body" && !message.requestHeaders.endOfStream;
        reply(call, {
          requestHeaders: { response: { headerMutation: routeLater ? undefined : route.headerMutation } },
          dynamicMetadata: route.dynamicMetadata,
        });
        headersReplied = true;
      } else if (message.requestBody !== undefined) {
        const { body, endOfStream } = message.requestBody;
        if (duplexRequest) {
          if (headersReplied) {
            reply(call, { requestBody: { response: { bodyMutation: { streamedResponse: { body, endOfStream } } } } });
            return;
          }
          held.push(body);
          if (endOfStream) releaseRequest(true);
          return;
        }
        const routeHere = options.routeIn === "body" && requestMode === ProcessingMode_BodySendMode.BUFFERED;
        reply(call, { requestBody: { response: { headerMutation: routeHere ? route.headerMutation : undefined } } });
      } else if (message.requestTrailers !== undefined) {
        if (duplexRequest && !headersReplied) releaseRequest(false);
        reply(call, { requestTrailers: {} });
      } else if (message.responseHeaders !== undefined) {
        reply(call, { responseHeaders: {} });
      } else if (message.responseBody !== undefined) {
        const { body, endOfStream } = message.responseBody;
        reply(
          call,
          duplexResponse
            ? { responseBody: { response: { bodyMutation: { streamedResponse: { body, endOfStream } } } } }
            : { responseBody: {} },
        );
      } else if (message.responseTrailers !== undefined) {
        reply(call, { responseTrailers: {} });
      }
    });
  };
}
