// Tests of the Envoy stand-in itself, against small hand-written ext_proc servers.
import { setTimeout as delay } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProcessingMode_BodySendMode } from "../../src/gen/envoy/extensions/filters/http/ext_proc/v3/processing_mode.js";
import type { ProcessingRequest } from "../../src/gen/envoy/service/ext_proc/v3/external_processor.js";
import { echoOf, type EchoUpstream, RESPONSE_TRAILERS, startEchoUpstream, WANT_TRAILERS } from "./echo-upstream.js";
import {
  type Chunking,
  EnvoyExtProcClient,
  type ExchangeResult,
  type ExchangeSpec,
  type FilterConfig,
  formatLog,
  httpUpstream,
  type ResetPoint,
  type Upstream,
} from "./ext-proc-client.js";
import {
  echoAndRoute,
  type ObservedStream,
  type ProcessorHandler,
  rawHeader,
  reply,
  routeTo,
  startProcessor,
} from "./fake-processors.js";

let upstream: EchoUpstream;
beforeAll(async () => {
  upstream = await startEchoUpstream();
});
afterAll(() => upstream.close());

const prompt = Buffer.from(
  JSON.stringify({ model: "m", stream: true, messages: [{ role: "user", content: "héllo wörld ✓ ".repeat(300) }] }),
);

type Spec = Omit<ExchangeSpec, "upstream"> & { upstream?: Upstream };

interface Outcome {
  result: ExchangeResult;
  /** The server's view of the (only) Process stream, complete once it is over; undefined if none. */
  stream: ObservedStream | undefined;
}

/** Runs one exchange against a fresh processor and waits until the server saw the stream end. */
async function run(handler: ProcessorHandler, spec: Spec): Promise<Outcome> {
  const server = await startProcessor(handler);
  const client = new EnvoyExtProcClient(server.address);
  try {
    const result = await client.exchange({ upstream: httpUpstream(), ...spec });
    const stream = server.streams[0];
    if (stream !== undefined) await Promise.race([stream.closed, delay(2000)]);
    return { result, stream };
  } finally {
    client.close();
    await server.close();
  }
}

const post = (extra: Partial<Spec["request"]> = {}): Spec["request"] => ({
  method: "POST",
  path: "/v1/chat/completions",
  headers: { "content-type": "application/json" },
  body: prompt,
  ...extra,
});

/** A body arriving over time (an HTTP/1 client), so replies can come back between chunks. */
async function* paced(body: Buffer, pieces: number): AsyncGenerator<Buffer> {
  const size = Math.ceil(body.length / pieces);
  for (let offset = 0; offset < body.length; offset += size) {
    yield body.subarray(offset, offset + size);
    await delay(15);
  }
}

const kinds = (received: readonly ProcessingRequest[]): string[] =>
  received.map((m) => Object.keys(m).find((k) => /^(request|response)(Headers|Body|Trailers)$/.test(k) && m[k as keyof ProcessingRequest] !== undefined) ?? "?");

const explain = (result: ExchangeResult): string => formatLog(result.log);

describe("well-behaved processor: the exchange goes through intact", () => {
  const withTrailers = (mode: "SEND" | "SKIP") => ({ requestTrailerMode: mode, responseTrailerMode: mode }) as const;
  const modes: Array<[string, Partial<FilterConfig>]> = [
    ["FULL_DUPLEX_STREAMED", {}],
    ["STREAMED", { requestBodyMode: "STREAMED", responseBodyMode: "STREAMED", ...withTrailers("SEND"), messageTimeoutMs: 5000 }],
    [
      "STREAMED, body sent before the headers reply",
      { requestBodyMode: "STREAMED", responseBodyMode: "STREAMED", ...withTrailers("SEND"), messageTimeoutMs: 5000, sendBodyWithoutWaitingForHeaderResponse: true },
    ],
    ["BUFFERED", { requestBodyMode: "BUFFERED", responseBodyMode: "BUFFERED", ...withTrailers("SEND"), messageTimeoutMs: 5000 }],
    ["NONE (headers only)", { requestBodyMode: "NONE", responseBodyMode: "NONE", ...withTrailers("SKIP"), messageTimeoutMs: 5000 }],
  ];
  const shapes: Array<{ name: string; chunking?: Chunking; ending?: "eos-on-last" | "empty-eos"; trailers?: Record<string, string> }> = [
    { name: "random chunks ending with eos on the last", chunking: { random: { seed: 1, maxChunk: 700 } }, ending: "eos-on-last" },
    { name: "random chunks ending with an empty eos chunk", chunking: { random: { seed: 2, maxChunk: 300 } }, ending: "empty-eos" },
    { name: "chunks followed by trailers", chunking: { sizes: [1000] }, trailers: { "x-client-trailer": "t1" } },
  ];

  describe.each(modes)("%s", (_, config) => {
    it.each(shapes)("$name", async ({ chunking, ending, trailers }) => {
      const { result, stream } = await run(echoAndRoute({ endpoint: upstream.endpoint }), {
        request: post({ trailers, headers: trailers ? { [WANT_TRAILERS]: "1" } : {} }),
        chunking,
        ending,
        config,
      });
      expect(result.failure, explain(result)).toBeUndefined();
      expect(result.status).toBe(200);
      expect(result.routedTo).toBe(upstream.endpoint);
      const received = upstream.requests.find((r) => r.headers["x-request-id"] === result.upstreamRequest?.headers["x-request-id"]);
      expect(received?.body.equals(prompt)).toBe(true);
      expect(result.body.equals(Buffer.concat(echoOf(prompt)))).toBe(true);
      if (trailers !== undefined) {
        expect(received?.trailers).toEqual(trailers);
        expect(result.trailers).toEqual(RESPONSE_TRAILERS);
      }
      expect(result.dynamicMetadata["envoy.lb"]).toEqual({ "x-gateway-destination-endpoint": upstream.endpoint });
      expect(result.violations).toEqual([]);
      expect(stream?.halfClosed).toBe(true);
      expect(stream?.cancelled).toBe(true);
    });
  });

  it("a request without body ends the headers message and needs no body message", async () => {
    const { result, stream } = await run(echoAndRoute({ endpoint: upstream.endpoint }), {
      request: { method: "GET", path: "/v1/models" },
    });
    expect(result.status).toBe(200);
    expect(stream?.received[0]?.requestHeaders?.endOfStream).toBe(true);
    expect(kinds(stream?.received ?? []).filter((k) => k.startsWith("request"))).toEqual(["requestHeaders"]);
  });
});

describe("what Envoy sends", () => {
  it("headers in raw_value, pseudo-headers, generated ids, protocol_config first, metadata_context always", async () => {
    const metadataContext = { "envoy.lb.subset_hint": { "x-gateway-destination-endpoint-subset": [upstream.endpoint] } };
    const { result, stream } = await run(echoAndRoute({ endpoint: upstream.endpoint }), {
      request: post({ headers: { Host: "gw.example", "X-Custom": "yes", "x-gateway-destination-endpoint": "10.9.9.9:1" } }),
      chunking: { sizes: [500] },
      metadataContext,
    });
    expect(result.status).toBe(200);
    const received = stream?.received ?? [];
    const headers = received[0]?.requestHeaders?.headers?.headers ?? [];
    expect(headers.every((h) => h.value === "" && h.rawValue.length > 0 && h.key === h.key.toLowerCase())).toBe(true);
    const get = (key: string) => headers.find((h) => h.key === key)?.rawValue.toString();
    expect(get(":method")).toBe("POST");
    expect(get(":path")).toBe("/v1/chat/completions");
    expect(get(":authority")).toBe("gw.example");
    expect(get(":scheme")).toBe("http");
    expect(get("host")).toBeUndefined();
    expect(get("x-custom")).toBe("yes");
    expect(get("x-gateway-destination-endpoint")).toBe("10.9.9.9:1");
    expect(get("x-forwarded-proto")).toBe("http");
    expect(get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    expect(get("content-length")).toBe(String(prompt.length));
    expect(received[0]?.protocolConfig).toEqual({
      requestBodyMode: ProcessingMode_BodySendMode.FULL_DUPLEX_STREAMED,
      responseBodyMode: ProcessingMode_BodySendMode.FULL_DUPLEX_STREAMED,
      sendBodyWithoutWaitingForHeaderResponse: false,
    });
    expect(received.slice(1).every((m) => m.protocolConfig === undefined)).toBe(true);
    expect(received.every((m) => JSON.stringify(m.metadataContext?.filterMetadata) === JSON.stringify(metadataContext))).toBe(true);
    // Body chunks go out before any reply: all request messages precede the response ones.
    const order = kinds(received);
    expect(order.slice(0, order.indexOf("responseHeaders")).every((k) => k.startsWith("request"))).toBe(true);
    expect(order.filter((k) => k === "requestBody").length).toBe(Math.ceil(prompt.length / 500));
    // FULL_DUPLEX_STREAMED: content-length cannot survive, the upstream gets chunked encoding.
    expect(result.upstreamRequest?.headers["content-length"]).toBeUndefined();
  });

  it("STREAMED: a body completed before the headers reply goes out in one message", async () => {
    const { result, stream } = await run(echoAndRoute({ endpoint: upstream.endpoint }), {
      request: post(),
      chunking: { sizes: [100] },
      config: { requestBodyMode: "STREAMED", messageTimeoutMs: 5000 },
    });
    expect(result.status).toBe(200);
    const bodies = (stream?.received ?? []).filter((m) => m.requestBody !== undefined);
    expect(bodies.map((m) => [m.requestBody?.body.length, m.requestBody?.endOfStream])).toEqual([[prompt.length, true]]);
  });

  it("STREAMED: chunks arriving after the headers reply go out one message each, then an empty end", async () => {
    const { result, stream } = await run(echoAndRoute({ endpoint: upstream.endpoint }), {
      request: post({ body: paced(prompt, 4) }),
      config: { requestBodyMode: "STREAMED", messageTimeoutMs: 5000 },
    });
    expect(result.status).toBe(200);
    expect(result.upstreamRequest?.body.equals(prompt)).toBe(true);
    const bodies = (stream?.received ?? []).filter((m) => m.requestBody !== undefined);
    expect(bodies.length).toBe(5);
    expect(bodies.at(-1)?.requestBody).toEqual({ body: Buffer.alloc(0), endOfStream: true });
  });

  it("an upstream ending with eos on its last chunk shows up that way on the stream", async () => {
    const scripted: Upstream = async () => ({
      status: 201,
      headers: { "x-upstream": "yes" },
      body: (async function* () {
        yield "a";
        yield "bc";
      })(),
      ending: "eos-on-last",
    });
    const { result, stream } = await run(echoAndRoute({ endpoint: upstream.endpoint }), { request: post(), upstream: scripted });
    expect(result.status).toBe(201);
    expect(result.headers["x-upstream"]).toBe("yes");
    expect(result.body.toString()).toBe("abc");
    const responseBodies = (stream?.received ?? []).flatMap((m) => (m.responseBody !== undefined ? [m.responseBody] : []));
    expect(responseBodies.map((b) => [b.body.toString(), b.endOfStream])).toEqual([
      ["a", false],
      ["bc", true],
    ]);
    const statusHeader = stream?.received.find((m) => m.responseHeaders !== undefined)?.responseHeaders?.headers?.headers.find((h) => h.key === ":status");
    expect(statusHeader?.rawValue.toString()).toBe("201");
  });

  it("protocol_config can be turned off (Envoy < 1.34)", async () => {
    const { stream } = await run(echoAndRoute({ endpoint: upstream.endpoint }), {
      request: { method: "GET", path: "/" },
      config: { sendProtocolConfig: false },
    });
    expect(stream?.received.every((m) => m.protocolConfig === undefined)).toBe(true);
  });
});

describe("FULL_DUPLEX_STREAMED protocol violations", () => {
  it("a body reply before the headers reply is a spurious message: 500", async () => {
    const { result, stream } = await run(
      (call) =>
        call.on("data", (m: ProcessingRequest) => {
          if (m.requestBody?.endOfStream !== true) return;
          reply(call, { requestBody: { response: { bodyMutation: { streamedResponse: { body: prompt, endOfStream: true } } } } });
          reply(call, { requestHeaders: { response: routeTo(upstream.endpoint) } });
        }),
      { request: post() },
    );
    expect(result.status).toBe(500);
    expect(result.failure?.kind).toBe("spurious-message");
    expect(result.localReply?.details).toBe("spurious_message");
    expect(result.routedTo).toBeUndefined();
    expect(stream?.cancelled).toBe(true);
  });

  it("a plain BodyResponse (no streamed_response) is a spurious message: 500", async () => {
    const { result } = await run(
      (call) =>
        call.on("data", (m: ProcessingRequest) => {
          if (m.requestBody?.endOfStream !== true) return;
          reply(call, { requestHeaders: { response: routeTo(upstream.endpoint) } });
          reply(call, { requestBody: { response: {} } });
        }),
      { request: post() },
    );
    expect(result.status).toBe(500);
    expect(result.failure?.message).toContain("Normal body mutation response");
  });

  it("a reply of the wrong kind is a spurious message: 500", async () => {
    const { result } = await run(
      (call) => call.on("data", (m: ProcessingRequest) => m.requestHeaders !== undefined && reply(call, { responseHeaders: {} })),
      { request: { method: "GET", path: "/" } },
    );
    expect(result.status).toBe(500);
    expect(result.failure?.kind).toBe("spurious-message");
  });

  it("a missing end_of_stream echo stalls the request (reported when the client gives up)", async () => {
    const { result, stream } = await run(
      (call) =>
        call.on("data", (m: ProcessingRequest) => {
          if (m.requestBody?.endOfStream !== true) return;
          reply(call, { requestHeaders: { response: routeTo(upstream.endpoint) } });
          reply(call, { requestBody: { response: { bodyMutation: { streamedResponse: { body: prompt, endOfStream: false } } } } });
        }),
      { request: post(), timeoutMs: 300 },
    );
    expect(result.failure?.kind).toBe("stalled");
    expect(result.failure?.message).toContain("waiting for StreamedBodyCallback");
    expect(result.reset?.by).toBe("client");
    expect(result.upstreamRequest?.complete).toBe(false);
    expect(stream?.cancelled).toBe(true);
  });

  it("closing the stream with OK mid-body loses the un-echoed bytes", async () => {
    const { result } = await run(
      (call) =>
        call.on("data", (m: ProcessingRequest) => {
          if (m.requestBody !== undefined) call.end();
        }),
      { request: post(), chunking: { sizes: [100] } },
    );
    expect(result.failure?.kind).toBe("body-lost");
    expect(result.stream.closedBy).toBe("server");
    expect(result.stream.serverStatus?.code).toBe(grpc.status.OK);
  });

  it("Envoy keeps no copy: only the bytes the processor echoes reach the upstream", async () => {
    const rewritten = Buffer.from('{"model":"rewritten"}');
    const { result } = await run(
      (call) =>
        call.on("data", (m: ProcessingRequest) => {
          if (m.requestBody?.endOfStream === true) {
            reply(call, { requestHeaders: { response: routeTo(upstream.endpoint) } });
            reply(call, { requestBody: { response: { bodyMutation: { streamedResponse: { body: rewritten, endOfStream: true } } } } });
          } else if (m.responseHeaders !== undefined) {
            reply(call, { responseHeaders: {} });
          } else if (m.responseBody !== undefined) {
            reply(call, { responseBody: { response: { bodyMutation: { streamedResponse: m.responseBody } } } });
          }
        }),
      { request: post(), chunking: { sizes: [256] } },
    );
    expect(result.status).toBe(200);
    expect(result.upstreamRequest?.body.equals(rewritten)).toBe(true);
    expect(result.body.equals(Buffer.concat(echoOf(rewritten)))).toBe(true);
  });

  it("closing the stream with OK after the request phase: the response passes unprocessed", async () => {
    let serverDone: Promise<void> = Promise.resolve();
    const real = httpUpstream();
    // The upstream answers only once the processor's OK status had time to reach Envoy; had the
    // response started first, its un-echoed bytes would be lost (and reported as such).
    const afterServerClosed: Upstream = async (request) => {
      await serverDone;
      await delay(20);
      return real(request);
    };
    const { result, stream } = await run(
      (call, observed) => {
        echoAndRoute({ endpoint: upstream.endpoint })(call, observed);
        serverDone = observed.closed;
        call.on("data", (m: ProcessingRequest) => {
          if (m.requestBody?.endOfStream === true) call.end();
        });
      },
      { request: post(), upstream: afterServerClosed },
    );
    expect(result.failure).toBeUndefined();
    expect(result.status).toBe(200);
    expect(result.body.equals(Buffer.concat(echoOf(prompt)))).toBe(true);
    expect(result.stream.closedBy).toBe("server");
    expect(kinds(stream?.received ?? []).some((k) => k.startsWith("response"))).toBe(false);
  });

  it("echo pieces over 62,000 bytes are flagged, yet forwarded", async () => {
    const big = Buffer.alloc(150_000, "a");
    const { result } = await run(echoAndRoute({ endpoint: upstream.endpoint, echoChunkSize: 100_000 }), {
      request: post({ body: big }),
    });
    expect(result.status).toBe(200);
    expect(result.upstreamRequest?.body.equals(big)).toBe(true);
    expect(result.violations.some((v) => v.includes("exceeds 62000"))).toBe(true);
  });
});

describe("header mutations", () => {
  /** Routes with the given set_headers (instead of a proper raw_value one), then echoes. */
  const routeWith = (setHeaders: Array<ReturnType<typeof rawHeader>>, removeHeaders: string[] = []): ProcessorHandler => {
    return (call) => {
      const held: Buffer[] = [];
      call.on("data", (m: ProcessingRequest) => {
        if (m.requestHeaders?.endOfStream === true) {
          reply(call, { requestHeaders: { response: { headerMutation: { setHeaders, removeHeaders } } } });
        } else if (m.requestBody !== undefined) {
          held.push(m.requestBody.body);
          if (!m.requestBody.endOfStream) return;
          reply(call, { requestHeaders: { response: { headerMutation: { setHeaders, removeHeaders } } } });
          reply(call, { requestBody: { response: { bodyMutation: { streamedResponse: { body: Buffer.concat(held), endOfStream: true } } } } });
        } else if (m.responseHeaders !== undefined) {
          reply(call, { responseHeaders: {} });
        } else if (m.responseBody !== undefined) {
          reply(call, { responseBody: { response: { bodyMutation: { streamedResponse: m.responseBody } } } });
        }
      });
    };
  };

  it("a value-only routing header sets an empty header: ORIGINAL_DST has no host, 503", async () => {
    const { result } = await run(routeWith([{ header: { key: "x-gateway-destination-endpoint", value: upstream.endpoint } }]), {
      request: post(),
    });
    expect(result.status).toBe(503);
    expect(result.localReply?.details).toBe("no_healthy_upstream");
    expect(result.body.toString()).toBe("no healthy upstream");
    expect(result.routedTo).toBeUndefined();
    expect(result.failure).toBeUndefined();
  });

  it("value and raw_value both set: 500", async () => {
    const { result } = await run(
      routeWith([{ header: { key: "x-gateway-destination-endpoint", value: upstream.endpoint, rawValue: Buffer.from(upstream.endpoint) } }]),
      { request: post() },
    );
    expect(result.status).toBe(500);
    expect(result.failure?.kind).toBe("mutation-rejected");
    expect(result.failure?.message).toContain("Only one of value or raw_value");
  });

  it("refuses :authority, host, :method and x-envoy-*; honours :path, append and remove_headers", async () => {
    const { result } = await run(
      routeWith(
        [
          rawHeader("x-gateway-destination-endpoint", upstream.endpoint),
          rawHeader(":authority", "evil.example"),
          rawHeader("host", "evil.example"),
          rawHeader(":method", "DELETE"),
          rawHeader("x-envoy-original-path", "/x"),
          rawHeader(":path", "/v1/rewritten"),
          rawHeader("x-existing", "replaced"),
          rawHeader("x-multi", "a", true),
          rawHeader("x-multi", "b", true),
          rawHeader("content-length", "1"),
        ],
        ["x-drop-me", ":method"],
      ),
      { request: post({ authority: "gw.example", headers: { "x-existing": "old", "x-drop-me": "1" } }) },
    );
    expect(result.failure, explain(result)).toBeUndefined();
    const sent = result.upstreamRequest;
    expect(sent?.authority).toBe("gw.example");
    expect(sent?.method).toBe("POST");
    expect(sent?.path).toBe("/v1/rewritten");
    expect(sent?.headers["x-envoy-original-path"]).toBeUndefined();
    expect(sent?.headers["x-existing"]).toBe("replaced");
    expect(sent?.headers["x-multi"]).toBe("a,b");
    expect(sent?.headers["x-drop-me"]).toBeUndefined();
    expect(sent?.headers["content-length"]).toBeUndefined();
    expect(upstream.requests.at(-1)?.url).toBe("/v1/rewritten");
  });
});

describe("routing", () => {
  it("when the processor never sets the routing header, the client-sent one is used", async () => {
    const { result } = await run(echoAndRoute({ endpoint: undefined }), {
      request: post({ headers: { "x-gateway-destination-endpoint": upstream.endpoint } }),
    });
    expect(result.status).toBe(200);
    expect(result.routedTo).toBe(upstream.endpoint);
  });

  it("a comma list is not an address for ORIGINAL_DST (503) unless the data plane takes the first entry", async () => {
    const list = `${upstream.endpoint},10.0.0.2:8000`;
    const single = await run(echoAndRoute({ endpoint: list }), { request: post() });
    expect(single.result.status).toBe(503);
    const firstOfList = await run(echoAndRoute({ endpoint: list }), {
      request: post(),
      config: { routingHeaderValue: "first-of-list" },
    });
    expect(firstOfList.result.status).toBe(200);
    expect(firstOfList.result.routedTo).toBe(upstream.endpoint);
  });

  it("an unreachable upstream: 503 from Envoy, never shown to the processor, stream just ends", async () => {
    const closedPort = await (async () => {
      const probe = await startEchoUpstream();
      await probe.close();
      return probe.endpoint;
    })();
    const { result, stream } = await run(echoAndRoute({ endpoint: closedPort }), { request: post() });
    expect(result.status).toBe(503);
    expect(result.localReply?.details).toContain("remote_connection_failure");
    expect(result.routedTo).toBe(closedPort);
    expect(kinds(stream?.received ?? []).some((k) => k.startsWith("response"))).toBe(false);
    expect(stream?.halfClosed).toBe(true);
    expect(stream?.cancelled).toBe(true);
  });
});

describe("ImmediateResponse and errors", () => {
  it("an ImmediateResponse reaches the client and ends processing", async () => {
    const { result, stream } = await run(
      (call) =>
        call.on("data", (m: ProcessingRequest) => {
          if (m.requestBody?.endOfStream !== true) return;
          reply(call, {
            immediateResponse: {
              status: { code: 429 },
              body: Buffer.from('{"error":"slow down"}'),
              details: "rate limited",
              headers: { setHeaders: [rawHeader("retry-after", "1"), rawHeader("content-type", "application/json")] },
            },
          });
        }),
      { request: post() },
    );
    expect(result.status).toBe(429);
    expect(result.body.toString()).toBe('{"error":"slow down"}');
    expect(result.headers["retry-after"]).toBe("1");
    expect(result.headers["content-type"]).toBe("application/json");
    expect(result.immediateResponse?.details).toBe("rate_limited");
    expect(result.routedTo).toBeUndefined();
    expect(result.failure).toBeUndefined();
    expect(kinds(stream?.received ?? []).some((k) => k.startsWith("response"))).toBe(false);
    expect(stream?.cancelled).toBe(true);
  });

  it("a gRPC error status from the processor: 500", async () => {
    const { result } = await run(
      (call) =>
        call.on("data", (m: ProcessingRequest) => {
          if (m.requestHeaders !== undefined) call.emit("error", { code: grpc.status.INTERNAL, details: "boom" });
        }),
      { request: post() },
    );
    expect(result.status).toBe(500);
    expect(result.failure?.kind).toBe("grpc-error");
    expect(result.localReply?.details).toBe("ext_proc_error_gRPC_error_13{boom}");
  });

  it.each([
    ["NONE", { requestBodyMode: "NONE", responseBodyMode: "NONE", requestTrailerMode: "SKIP", responseTrailerMode: "SKIP" }],
    ["BUFFERED", { requestBodyMode: "BUFFERED", responseBodyMode: "BUFFERED", requestTrailerMode: "SKIP", responseTrailerMode: "SKIP" }],
  ] as const)("%s: a reply later than message_timeout is a 504", async (_, modes) => {
    // Long enough for the processor to see the stream before the timer fires, even on a loaded
    // machine: a stream reset before the server reads it is never handed to the processor at all.
    const { result, stream } = await run(() => undefined, {
      request: post(),
      config: { ...modes, messageTimeoutMs: 250 },
    });
    expect(result.status).toBe(504);
    expect(result.failure?.kind).toBe("message-timeout");
    expect(result.localReply?.details).toBe("ext_proc_error_per-message_timeout_exceeded");
    expect(stream?.cancelled).toBe(true);
  });

  it("FULL_DUPLEX_STREAMED has no per-message timer", async () => {
    const { result } = await run(
      (call) =>
        call.on("data", (m: ProcessingRequest) => {
          if (m.requestHeaders === undefined) return;
          setTimeout(() => reply(call, { requestHeaders: { response: routeTo(upstream.endpoint) } }), 120);
        }),
      { request: { method: "GET", path: "/" }, config: { messageTimeoutMs: 20, responseBodyMode: "NONE", responseTrailerMode: "SKIP" } },
    );
    // The response headers message has a timer (body mode NONE) and is never answered: 504 comes
    // only after the request phase went through, 120 ms late without harm.
    expect(result.routedTo).toBe(upstream.endpoint);
    expect(result.status).toBe(504);
  });
});

describe("BUFFERED specifics", () => {
  const buffered: Partial<FilterConfig> = { requestBodyMode: "BUFFERED", responseBodyMode: "NONE", requestTrailerMode: "SKIP", responseTrailerMode: "SKIP", messageTimeoutMs: 5000 };

  it("a header mutation in the body reply still applies to the held request headers", async () => {
    const { result, stream } = await run(echoAndRoute({ endpoint: upstream.endpoint, routeIn: "body" }), {
      request: post(),
      chunking: { random: { seed: 3, maxChunk: 200 } },
      config: buffered,
    });
    expect(result.status).toBe(200);
    expect(result.routedTo).toBe(upstream.endpoint);
    const bodies = (stream?.received ?? []).filter((m) => m.requestBody !== undefined);
    expect(bodies.length).toBe(1);
    expect(bodies[0]?.requestBody?.body.equals(prompt)).toBe(true);
  });

  it("a replaced body must match content-length, which the same reply may fix", async () => {
    const replacement = Buffer.from('{"model":"other"}');
    const replaceBody =
      (fixLength: boolean): ProcessorHandler =>
      (call) =>
        call.on("data", (m: ProcessingRequest) => {
          if (m.requestHeaders !== undefined) reply(call, { requestHeaders: {} });
          if (m.responseHeaders !== undefined) reply(call, { responseHeaders: {} });
          if (m.requestBody === undefined) return;
          const setHeaders = [rawHeader("x-gateway-destination-endpoint", upstream.endpoint)];
          if (fixLength) setHeaders.push(rawHeader("content-length", String(replacement.length)));
          reply(call, { requestBody: { response: { headerMutation: { setHeaders }, bodyMutation: { body: replacement } } } });
        });
    const mismatch = await run(replaceBody(false), { request: post(), config: buffered });
    expect(mismatch.result.status).toBe(500);
    expect(mismatch.result.failure?.message).toContain("mismatch between content length");
    const fixed = await run(replaceBody(true), { request: post(), config: buffered });
    expect(fixed.result.status).toBe(200);
    expect(fixed.result.upstreamRequest?.body.equals(replacement)).toBe(true);
  });
});

describe("resets and closing", () => {
  const points: Array<[string, (p: ResetPoint) => boolean]> = [
    ["mid request body", (p) => p.at === "request-body" && p.chunk === 1],
    ["while waiting for the headers reply", (p) => p.at === "request-complete"],
    ["right after routing", (p) => p.at === "routed"],
    ["after the response headers", (p) => p.at === "response-headers"],
    ["mid response body", (p) => p.at === "response-body" && p.chunk === 0],
    ["after the client got response headers", (p) => p.at === "downstream-headers"],
  ];

  it.each(points)("a client reset %s cancels the stream", async (_, when) => {
    const { result, stream } = await run(echoAndRoute({ endpoint: upstream.endpoint }), {
      request: post({ body: paced(prompt, 4) }),
      reset: when,
    });
    expect(result.reset?.by).toBe("client");
    expect(result.stream.closedBy).toBe("envoy");
    expect(stream?.halfClosed).toBe(true);
    expect(stream?.cancelled).toBe(true);
  });

  it("a client reset right after the request headers: the stream is cancelled, maybe before the server saw it", async () => {
    const { result, stream } = await run(echoAndRoute({ endpoint: upstream.endpoint }), {
      request: post(),
      reset: (p) => p.at === "request-headers",
    });
    expect(result.reset?.by).toBe("client");
    expect(result.stream.closedBy).toBe("envoy");
    expect(stream === undefined || stream.cancelled).toBe(true);
    expect(kinds(stream?.received ?? [])).not.toContain("requestBody");
  });

  it("a reset before anything is decoded never opens a stream", async () => {
    const { result, stream } = await run(echoAndRoute({ endpoint: upstream.endpoint }), {
      request: post(),
      reset: (p) => p.at === "request-start",
    });
    expect(result.reset?.by).toBe("client");
    expect(result.stream.opened).toBe(false);
    expect(stream).toBeUndefined();
  });

  it("an upstream reset mid-response resets the client after what was echoed", async () => {
    const failing: Upstream = async () => ({
      status: 200,
      headers: { "content-type": "text/event-stream" },
      body: (async function* () {
        yield "data: 1\n\n";
        await delay(20);
        throw new Error("connection reset by peer");
      })(),
    });
    const { result, stream } = await run(echoAndRoute({ endpoint: upstream.endpoint }), { request: post(), upstream: failing });
    expect(result.status).toBe(200);
    expect(result.body.toString()).toBe("data: 1\n\n");
    expect(result.reset?.by).toBe("upstream");
    expect(stream?.cancelled).toBe(true);
  });

  it("with closeStreamOnLastReply the stream is cancelled as soon as the last needed reply is in", async () => {
    const server = await startProcessor(echoAndRoute({ endpoint: upstream.endpoint }));
    const client = new EnvoyExtProcClient(server.address, {
      config: { responseBodyMode: "NONE", responseTrailerMode: "SKIP", closeStreamOnLastReply: true },
    });
    // The upstream finishes only after the processor saw its stream end: with the old closing
    // behaviour (at the end of the HTTP stream) this would deadlock and stall.
    const slow: Upstream = async () => ({
      status: 200,
      body: (async function* () {
        yield "part 1;";
        await server.streams[0]?.closed;
        yield "part 2";
      })(),
    });
    try {
      const result = await client.exchange({ request: post(), upstream: slow, timeoutMs: 2000 });
      expect(result.failure, explain(result)).toBeUndefined();
      expect(result.body.toString()).toBe("part 1;part 2");
      expect(server.streams[0]?.cancelled).toBe(true);
    } finally {
      client.close();
      await server.close();
    }
  });
});
