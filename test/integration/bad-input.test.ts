import { afterEach, describe, expect, it } from "vitest";
import type { Upstream } from "../envoy/ext-proc-client.js";
import { gate } from "../support/gate.js";
import { LogCapture, totalLoad } from "../support/sidecar.js";
import { chat, chatRequest, errorOf, startRig, type Rig } from "./harness.js";

let rig: Rig | undefined;
afterEach(async () => {
  await rig?.expectIdle();
  await rig?.close();
  rig = undefined;
});

const received = (r: Rig) => r.engines.reduce((sum, engine) => sum + engine.stats().received, 0);

describe("bad request bodies", () => {
  it("invalid UTF-8 → 400 naming it; nothing reaches an engine", async () => {
    rig = await startRig({ engines: 1 });
    const body = Buffer.concat([Buffer.from('{"model": "llama", "messages": [{"role": "user", "content": "'), Buffer.from([0xff, 0xfe]), Buffer.from('"}]}')]);
    const result = await rig.exchange({ request: { ...chatRequest(""), body } });
    expect(result.status).toBe(400);
    expect(errorOf(result).message).toBe("request body is not valid UTF-8");
    expect(received(rig)).toBe(0);
  });

  it("content a number → 400 naming the field; nothing reaches an engine", async () => {
    rig = await startRig({ engines: 1 });
    const result = await rig.exchange({ request: chatRequest(JSON.stringify({ model: "llama", messages: [{ role: "user", content: 42 }] })) });
    expect(result.status).toBe(400);
    expect(errorOf(result).message).toBe("'messages[0].content' must be a string, an array of content parts or null");
    expect(received(rig)).toBe(0);
  });

  it("a body that never ends: held (bounded by the body limit), nothing reserved; 408 naming it after the body timeout", async () => {
    const capture = new LogCapture();
    rig = await startRig({ engines: 1, capture, sidecar: { extproc: { port: 0, requestBodyTimeoutSeconds: 0.5 } } });
    const giveUp = new AbortController();
    async function* endless(): AsyncGenerator<string> {
      yield '{"model": "llama", "messages": [{"role": "user", "content": "';
      yield "never finished ".repeat(100);
      await new Promise((resolve) => giveUp.signal.addEventListener("abort", resolve, { once: true }));
    }
    const pending = rig.exchange({
      request: { ...chatRequest(""), headers: { "content-type": "application/json", "x-request-id": "endless" }, body: endless() },
      signal: giveUp.signal,
    });
    // The body never completes, so nothing can be priced or picked while it is held.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await totalLoad(rig.sidecar)).toMatchObject({ requests: 0, ledger: 0 });
    const result = await pending;
    giveUp.abort();
    expect(result.status).toBe(408);
    expect(errorOf(result)).toMatchObject({ code: "request_timeout", message: "request body not complete after 0.5 s (1561 bytes received)" });
    expect(received(rig)).toBe(0);
    await expect.poll(() => capture.lines.filter((line) => line["requestId"] === "endless")).toEqual([
      expect.objectContaining({ outcome: "refused", status: 408, reason: "request_timeout" }),
    ]);
  });

  it("with the body timeout off, a body that never ends waits for the client; its giving up leaves nothing", async () => {
    rig = await startRig({ engines: 1, sidecar: { extproc: { port: 0, requestBodyTimeoutSeconds: 0 } } });
    const giveUp = new AbortController();
    async function* endless(): AsyncGenerator<string> {
      yield '{"model": "llama", "messages": [{"role": "user", "content": "';
      await new Promise((resolve) => giveUp.signal.addEventListener("abort", resolve, { once: true }));
    }
    const pending = rig.exchange({ request: { ...chatRequest(""), body: endless() }, signal: giveUp.signal });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await totalLoad(rig.sidecar)).toMatchObject({ requests: 0, ledger: 0 });
    giveUp.abort();
    const result = await pending;
    expect(result.reset?.by).toBe("client");
    expect(result.routedTo).toBeUndefined();
    expect(received(rig)).toBe(0);
  });

  it("JSON nested 200,000 deep → 400, and the sidecar keeps serving", async () => {
    rig = await startRig({ engines: 1 });
    const depth = 200_000;
    const deep = `{"model": "llama", "messages": [], "tools": [${'{"a":'.repeat(depth)}1${"}".repeat(depth)}]}`;
    const result = await rig.exchange({ request: chatRequest(deep) });
    expect(result.status).toBe(400);
    expect(errorOf(result).message).toBe("'tools[0]' is nested too deeply");
    const next = await rig.exchange({ request: chatRequest(chat("llama", "still here")) });
    expect(next.status).toBe(200);
  });

  it("a 100 MB body → 413 at the default 16 MiB limit; nothing reaches an engine", async () => {
    rig = await startRig({ engines: 1 });
    async function* huge(): AsyncGenerator<Buffer> {
      const piece = Buffer.alloc(1 << 20, 0x61);
      for (let i = 0; i < 100; i++) {
        // A client uploading over time: the refusal can overtake the rest of the body.
        await new Promise((resolve) => setTimeout(resolve, 5));
        yield piece;
      }
    }
    const result = await rig.exchange({ request: { ...chatRequest(""), body: huge() } });
    expect(result.status).toBe(413);
    expect(errorOf(result).code).toBe("request_too_large");
    // The refusal came while the body was still arriving, not after buffering all of it.
    const refusedAt = result.log.findIndex((entry) => entry.direction === "received" && entry.message !== undefined && "immediateResponse" in entry.message && entry.message.immediateResponse !== undefined);
    expect(refusedAt).toBeGreaterThan(0);
    const bytesBefore = result.log.slice(0, refusedAt).reduce((sum, entry) => {
      const body = entry.direction === "sent" ? entry.message?.requestBody : undefined;
      return sum + (body !== undefined && "body" in body ? body.body.length : 0);
    }, 0);
    expect(bytesBefore).toBeGreaterThan(16 << 20);
    expect(bytesBefore).toBeLessThan(100 << 20);
    expect(received(rig)).toBe(0);
  });
});

describe("a garbage SSE stream from the engine", () => {
  it("is echoed byte for byte; prefill ends only at an event with output; counters stay exact", async () => {
    rig = await startRig({ engines: 1 });
    const gates = [gate(), gate()];
    const garbage = ["data: not json\n\n", ": ping\n\n", 'data: {"choices": [{"delta": {"role": "assistant"}}]}\n\n', "event: x\ndata: {oops\n\n", "\x00\x01 bytes\n"];
    const output = 'data: {"choices": [{"delta": {"content": "ok"}}]}\n\n';
    const tail = "data: [1, 2]\n\ndata: {\"choices\": [{\"delta\": {\"content\": \"cut"; // no [DONE], cut mid-event
    const engine: Upstream = async () => ({
      status: 200,
      headers: { "content-type": "text/event-stream" },
      body: (async function* () {
        for (const piece of garbage) yield piece;
        await gates[0]!.promise;
        yield output;
        await gates[1]!.promise;
        yield tail;
      })(),
    });
    const pending = rig.exchange({ request: chatRequest(chat("llama", "garbage please", { stream: true })), upstream: engine });
    await expect.poll(async () => (await totalLoad(rig!.sidecar)).requests).toBe(1);
    const prefill = await totalLoad(rig.sidecar);
    expect(prefill).toMatchObject({ requests: 1, prefillRequests: 1 });
    gates[0]!.open();
    await expect.poll(async () => (await totalLoad(rig!.sidecar)).prefillRequests).toBe(0);
    expect(await totalLoad(rig.sidecar)).toMatchObject({ requests: 1, prefillTokens: 0, tokensHeld: prefill.tokensHeld + 1 });
    gates[1]!.open();
    const result = await pending;
    expect(result.status).toBe(200);
    expect(result.body.toString("utf8")).toBe(garbage.join("") + output + tail);
  });
});
