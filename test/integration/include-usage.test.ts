import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chat, chatRequest, startRig, type Rig } from "./harness.js";

let rig: Rig;
beforeAll(async () => {
  rig = await startRig({ engines: 1, sidecar: { inference: { forceIncludeUsage: true } } });
});
afterAll(async () => {
  await rig.expectIdle();
  await rig.close();
});

describe("inference.forceIncludeUsage", () => {
  it("asks a streaming engine for usage (FULL_DUPLEX: the rewritten body streams on without a length)", async () => {
    const body = chat("llama", "count me", { stream: true, temperature: 0 });
    const result = await rig.exchange({ request: { ...chatRequest(body), headers: { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)) } } });
    expect(result.failure).toBeUndefined();
    expect(result.status).toBe(200);
    const sent = JSON.parse(result.upstreamRequest!.body.toString()) as Record<string, unknown>;
    expect(sent).toMatchObject({ model: "llama", stream: true, temperature: 0, stream_options: { include_usage: true } });
    expect(result.upstreamRequest!.headers["content-length"]).toBeUndefined();
    expect(result.body.toString()).toContain('"usage"');
  });

  it("BUFFERED: the body reply carries the rewritten body and its new length", async () => {
    const body = chat("llama", "count me too", { stream: true, stream_options: { include_usage: false } });
    const result = await rig.exchange({
      request: { ...chatRequest(body), headers: { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)) } },
      config: { requestBodyMode: "BUFFERED" },
    });
    expect(result.failure).toBeUndefined();
    expect(result.status).toBe(200);
    const forwarded = result.upstreamRequest!.body;
    expect(JSON.parse(forwarded.toString())).toMatchObject({ stream_options: { include_usage: true } });
    expect(result.upstreamRequest!.headers["content-length"]).toBe(String(forwarded.length));
  });

  it("a 2 MiB request, parsed off the event loop: the rewritten body is built there and forwarded whole", async () => {
    const history = Array.from({ length: 20_000 }, (_, i) => ({ role: i % 2 === 0 ? "user" : "assistant", content: `turn ${i}: the harbour town woke slowly` }));
    const body = JSON.stringify({ model: "llama", messages: history, stream: true, max_tokens: 4 });
    expect(Buffer.byteLength(body)).toBeGreaterThan(1 << 20);
    const result = await rig.exchange({ request: chatRequest(body), chunking: { sizes: [65_536] } });
    expect(result.failure).toBeUndefined();
    expect(result.status).toBe(200);
    const sent = JSON.parse(result.upstreamRequest!.body.toString()) as { messages: unknown[]; stream_options: unknown };
    expect(sent.messages).toEqual(history);
    expect(sent.stream_options).toEqual({ include_usage: true });
  });

  it("leaves requests that already ask for usage, and non-streaming ones, byte for byte", async () => {
    for (const body of [chat("llama", "as is", { stream: true, stream_options: { include_usage: true } }), chat("llama", "plain")]) {
      const result = await rig.exchange({ request: chatRequest(body) });
      expect(result.upstreamRequest!.body.toString()).toBe(body);
    }
  });
});
