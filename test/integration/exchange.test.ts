import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { RESET_POINTS } from "../envoy/ext-proc-client.js";
import { FAULT_HEADER } from "../engine-sim/engine.js";
import { MAX_ECHO_CHUNK } from "../../src/extproc/exchange.js";
import { chat, chatRequest, errorOf, ROUTE_HEADER, startRig, type Rig } from "./harness.js";

let rig: Rig;
beforeAll(async () => {
  rig = await startRig({
    engines: 3,
    pools: ([a, b, c]) => [
      { name: "llama", models: ["llama"], endpoints: [a!, b!] },
      { name: "rest", models: ["*"], endpoints: [c!] },
    ],
    // The gateway in front sets the model-rewrite header itself (tests of untrusted headers: routing-inputs.test.ts).
    sidecar: { extproc: { port: 0, trustedHeaders: ["x-gateway-model-name-rewrite"] } },
  });
});
afterAll(() => rig.close());
afterEach(() => rig.expectIdle());

const llamaEngines = () => rig.engines.slice(0, 2).map((engine) => engine.address);

describe("request phase (FULL_DUPLEX_STREAMED)", () => {
  for (const ending of ["eos-on-last", "empty-eos"] as const) {
    for (const seed of [1, 2, 3]) {
      it(`routes a streaming chat to a pool engine, any chunk boundaries (${ending}, seed ${seed})`, async () => {
        const body = chat("llama", "Tell me about Envoy. ".repeat(20), { stream: true, stream_options: { include_usage: true } });
        const result = await rig.exchange({ request: chatRequest(body), chunking: { random: { seed, maxChunk: 97 } }, ending });
        expect(result.failure).toBeUndefined();
        expect(result.violations).toEqual([]);
        expect(result.status).toBe(200);
        expect(llamaEngines()).toContain(result.routedTo);
        expect(result.dynamicMetadata["envoy.lb"]).toEqual({ [ROUTE_HEADER]: result.routedTo });
        expect(result.upstreamRequest?.headers[ROUTE_HEADER]).toBe(result.routedTo);
        expect(result.upstreamRequest?.body.toString()).toBe(body);
        const text = result.body.toString();
        expect(text).toContain('"usage"');
        expect(text.trimEnd().endsWith("data: [DONE]")).toBe(true);
      });
    }
  }

  it("passes trailers: body echoed without end of stream, then the trailers reply", async () => {
    const body = chat("llama", "with trailers");
    const result = await rig.exchange({ request: { ...chatRequest(body), trailers: { "x-checksum": "abc" } }, chunking: { sizes: [10, 20] } });
    expect(result.failure).toBeUndefined();
    expect(result.status).toBe(200);
    expect(result.upstreamRequest?.body.toString()).toBe(body);
    expect(result.upstreamRequest?.trailers).toMatchObject({ "x-checksum": "abc" });
  });

  it("always overwrites a routing header sent by the client", async () => {
    const result = await rig.exchange({ request: chatRequest(chat("llama", "hi"), { [ROUTE_HEADER]: "10.66.66.66:1" }) });
    expect(result.status).toBe(200);
    expect(llamaEngines()).toContain(result.routedTo);
    expect(result.upstreamRequest?.headers[ROUTE_HEADER]).toBe(result.routedTo);
  });

  it("echoes a large body in chunks of at most 62,000 bytes, byte for byte", async () => {
    const body = chat("llama", "lorem ipsum dolor sit amet ".repeat(12_000));
    const result = await rig.exchange({ request: chatRequest(body), chunking: { random: { seed: 9, maxChunk: 16_384 } } });
    expect(result.failure).toBeUndefined();
    expect(result.violations).toEqual([]);
    expect(result.status).toBe(200);
    expect(result.upstreamRequest?.body.equals(Buffer.from(body))).toBe(true);
    const echoes = result.log.filter((entry) => entry.direction === "received" && entry.message && "requestBody" in entry.message && entry.message.requestBody);
    expect(echoes.length).toBeGreaterThanOrEqual(Math.ceil(Buffer.byteLength(body) / MAX_ECHO_CHUNK));
  });

  it("takes the model from x-gateway-model-name-rewrite over the body", async () => {
    const result = await rig.exchange({ request: chatRequest(chat("unknown-model", "hi"), { "x-gateway-model-name-rewrite": "llama" }) });
    expect(llamaEngines()).toContain(result.routedTo);
  });

  it("sends a request without a body to the catch-all pool", async () => {
    const result = await rig.exchange({ request: { method: "GET", path: "/v1/models" } });
    expect(result.status).toBe(200);
    expect(result.routedTo).toBe(rig.engines[2]!.address);
  });

  it("sends a model no named pool serves to the catch-all pool", async () => {
    const result = await rig.exchange({ request: chatRequest(chat("mistral", "hi")) });
    expect(result.status).toBe(200);
    expect(result.routedTo).toBe(rig.engines[2]!.address);
  });
});

describe("other body modes", () => {
  it("BUFFERED: the route rides on the body reply", async () => {
    const body = chat("llama", "buffered");
    const result = await rig.exchange({
      request: chatRequest(body, { [ROUTE_HEADER]: "10.66.66.66:1" }),
      config: { requestBodyMode: "BUFFERED", responseBodyMode: "BUFFERED" },
    });
    expect(result.failure).toBeUndefined();
    expect(result.status).toBe(200);
    expect(llamaEngines()).toContain(result.routedTo);
    expect(result.upstreamRequest?.body.toString()).toBe(body);
  });

  it("STREAMED: routed on headers, every chunk answered in order", async () => {
    const result = await rig.exchange({
      request: chatRequest(chat("llama", "streamed", { stream: true }), { "x-gateway-model-name-rewrite": "llama" }),
      chunking: { sizes: [5, 5, 5] },
      config: { requestBodyMode: "STREAMED", responseBodyMode: "STREAMED" },
    });
    expect(result.failure).toBeUndefined();
    expect(result.status).toBe(200);
    expect(llamaEngines()).toContain(result.routedTo);
  });

  it("headers only: routed on headers, the response's end closes the request", async () => {
    const result = await rig.exchange({
      request: chatRequest(chat("llama", "headers only"), { "x-gateway-model-name-rewrite": "llama" }),
      config: { requestBodyMode: "NONE", responseBodyMode: "NONE", requestTrailerMode: "SKIP", responseTrailerMode: "SKIP" },
    });
    expect(result.failure).toBeUndefined();
    expect(result.status).toBe(200);
    expect(llamaEngines()).toContain(result.routedTo);
  });

  it("Envoy before 1.34 (no protocol_config): the configured modes are assumed", async () => {
    const result = await rig.exchange({ request: chatRequest(chat("llama", "old envoy")), config: { sendProtocolConfig: false } });
    expect(result.failure).toBeUndefined();
    expect(result.status).toBe(200);
    expect(llamaEngines()).toContain(result.routedTo);
  });
});

describe("refusals reserve nothing", () => {
  const received = () => rig.engines.reduce((sum, engine) => sum + engine.stats().received, 0);

  it.each([
    ["malformed JSON", '{"model": "llama", "messages": [', /not valid JSON/],
    ["no model", JSON.stringify({ messages: [] }), /no 'model'/],
    ["messages not an array", JSON.stringify({ model: "llama", messages: {} }), /'messages' must be an array/],
  ])("%s → 400 naming the problem", async (_name, body, message) => {
    const before = received();
    const result = await rig.exchange({ request: chatRequest(body) });
    expect(result.status).toBe(400);
    expect(result.routedTo).toBeUndefined();
    const error = errorOf(result);
    expect(error.message).toMatch(message);
    expect(error.type).toBe("invalid_request_error");
    expect(received()).toBe(before);
  });
});

describe("responses end the request on every path", () => {
  it("an error status from the engine", async () => {
    const result = await rig.exchange({ request: chatRequest(chat("llama", "fail", { stream: true }), { [FAULT_HEADER]: "status=503" }) });
    expect(result.status).toBe(503);
  });

  it("an engine that resets mid-stream", async () => {
    const result = await rig.exchange({ request: chatRequest(chat("llama", "reset", { stream: true }), { [FAULT_HEADER]: "reset-after=3" }) });
    expect(result.reset).toBeDefined();
  });

  it("an error event inside the stream", async () => {
    const result = await rig.exchange({ request: chatRequest(chat("llama", "error", { stream: true }), { [FAULT_HEADER]: "error-after=2" }) });
    expect(result.body.toString()).toContain('"error"');
  });

  it("a plain JSON response with usage", async () => {
    const result = await rig.exchange({ request: chatRequest(chat("llama", "plain")) });
    expect(result.status).toBe(200);
    expect(JSON.parse(result.body.toString())).toHaveProperty("usage.prompt_tokens");
  });

  it.each(RESET_POINTS)("a client reset at %s", async (point) => {
    const result = await rig.exchange({
      request: chatRequest(chat("llama", "bye ".repeat(50), { stream: true, max_tokens: 8 })),
      chunking: { sizes: [30, 30] },
      reset: (at) => at.at === point,
    });
    expect(result.reset?.by).toBe("client");
  });
});
