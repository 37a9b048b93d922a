import { setMaxListeners } from "node:events";
import { afterEach, describe, expect, it } from "vitest";
import { FAULT_HEADER } from "../engine-sim/engine.js";
import { closedPort } from "../support/ports.js";
import { LogCapture, totalLoad } from "../support/sidecar.js";
import { chat, chatRequest, errorOf, startRig, type Rig } from "./harness.js";

let rig: Rig | undefined;
afterEach(async () => {
  await rig?.expectIdle();
  await rig?.close();
  rig = undefined;
});


describe("refusals", () => {
  it("404 model_not_found when no pool serves the model, 503 when the pool has no engine", async () => {
    rig = await startRig({
      engines: 1,
      pools: ([a]) => [
        { name: "llama", models: ["llama"], endpoints: [a!] },
        { name: "empty", models: ["ghost"], endpoints: [] },
      ],
    });
    const missing = await rig.exchange({ request: chatRequest(chat("mistral", "hi")) });
    expect(missing.status).toBe(404);
    expect(errorOf(missing)).toMatchObject({ code: "model_not_found", message: "no pool serves model 'mistral'" });
    const empty = await rig.exchange({ request: chatRequest(chat("ghost", "hi")) });
    expect(empty.status).toBe(503);
    expect(errorOf(empty)).toMatchObject({ code: "no_engine_available", type: "server_error" });
    expect(rig.engines[0]!.stats().received).toBe(0);
  });

  it("413 for a body above the limit, before it has all arrived", async () => {
    rig = await startRig({ engines: 1, sidecar: { extproc: { port: 0, maxRequestBodyBytes: 1000 } } });
    const result = await rig.exchange({ request: chatRequest(chat("llama", "y".repeat(5000))), chunking: { sizes: [600, 600] } });
    expect(result.status).toBe(413);
    expect(errorOf(result)).toMatchObject({ code: "request_too_large", message: expect.stringContaining("1000 bytes") });
    expect(rig.engines[0]!.stats().received).toBe(0);
  });
});

describe("the load numbers follow the exchange", () => {
  it("prefill is held until the first token, tokens held grow while decoding, all released at the end", async () => {
    rig = await startRig({ engines: 1, engine: { model: { stepBaseMs: 25 } } });
    const { sidecar, engines } = rig;
    const hanging = new AbortController();
    const hung = rig.exchange({
      request: chatRequest(chat("llama", "waiting for the first token", { stream: true }), { [FAULT_HEADER]: "hang" }),
      signal: hanging.signal,
    });
    await expect.poll(() => engines[0]!.stats().inFlight).toBe(1);
    const inPrefill = await totalLoad(sidecar);
    expect(inPrefill).toMatchObject({ requests: 1, prefillRequests: 1, ledger: 1 });
    expect(inPrefill.prefillTokens).toBeGreaterThan(5);
    expect(inPrefill.tokensHeld).toBe(inPrefill.prefillTokens);
    hanging.abort();
    expect((await hung).reset?.by).toBe("client");
    await rig.expectIdle();

    let firstChunk: (() => void) | undefined;
    const sawFirst = new Promise<void>((resolve) => (firstChunk = resolve));
    const decoding = rig.exchange({
      request: chatRequest(chat("llama", "count slowly", { stream: true, max_tokens: 12 })),
      downstream: { onHeaders() {}, onData: () => firstChunk?.(), onTrailers() {}, onEnd() {}, onReset() {} },
    });
    await sawFirst;
    await expect.poll(async () => (await totalLoad(sidecar)).tokensHeld).toBeGreaterThan(inPrefill.tokensHeld);
    expect(await totalLoad(sidecar)).toMatchObject({ requests: 1, prefillRequests: 0, prefillTokens: 0 });
    expect((await decoding).status).toBe(200);
  });

  it("an entry never closed expires after the TTL, and its late end does not release twice", async () => {
    rig = await startRig({ engines: 1, sidecar: { load: { ttlSeconds: 0.3, sweepSeconds: 0.05 } } });
    const stop = new AbortController();
    const open = rig.exchange({
      request: chatRequest(chat("llama", "forgotten", { stream: true }), { [FAULT_HEADER]: "hang" }),
      signal: stop.signal,
      timeoutMs: 0,
    });
    await expect.poll(() => rig!.engines[0]!.stats().inFlight).toBe(1);
    expect((await totalLoad(rig.sidecar)).requests).toBe(1);
    await expect.poll(async () => (await totalLoad(rig!.sidecar)).ledger, { timeout: 5000 }).toBe(0);
    expect(await totalLoad(rig.sidecar)).toMatchObject({ requests: 0, prefillRequests: 0, prefillTokens: 0, tokensHeld: 0 });
    const fresh = await rig.exchange({ request: chatRequest(chat("llama", "still picking")) });
    expect(fresh.status).toBe(200);
    stop.abort();
    await open;
  });

  it("an engine that cannot be reached: Envoy's local reply never reaches the sidecar, the stream's end releases", async () => {
    const port = await closedPort();
    rig = await startRig({ engines: 1, pools: () => [{ name: "llama", models: ["llama"], endpoints: [`127.0.0.1:${port}`] }] });
    const result = await rig.exchange({ request: chatRequest(chat("llama", "anyone there?")) });
    expect(result.status).toBe(503);
    expect(result.localReply).toBeDefined();
    expect(result.log.some((entry) => entry.direction === "sent" && entry.message && "responseHeaders" in entry.message && entry.message.responseHeaders)).toBe(false);
  });

  it("200 concurrent equal requests over 4 idle engines land 50/50/50/50", async () => {
    rig = await startRig({ engines: 4, engine: { fault: { kind: "hang" } } });
    const stop = new AbortController();
    setMaxListeners(250, stop.signal); // one listener per exchange: 200 is expected here
    const body = chat("llama", "the same prompt for everyone", { stream: true });
    const exchanges = Array.from({ length: 200 }, () => rig!.exchange({ request: chatRequest(body), signal: stop.signal, timeoutMs: 0 }));
    await expect.poll(() => rig!.engines.reduce((sum, engine) => sum + engine.stats().inFlight, 0), { timeout: 15_000 }).toBe(200);
    const perEngine = rig.engines.map((engine) => engine.stats().inFlight);
    expect(perEngine).toEqual([50, 50, 50, 50]);
    const loads = await rig.sidecar.store.loads(rig.engines.map((engine) => engine.address));
    expect([...loads.values()].map((load) => load.requests)).toEqual([50, 50, 50, 50]);
    stop.abort();
    await Promise.all(exchanges);
  });

  it("a reload changing a section that takes effect only after a restart says which, and keeps it", async () => {
    const capture = new LogCapture();
    rig = await startRig({ engines: 1, capture });
    const before = rig.sidecar.config;
    rig.sidecar.reload({ ...before, inference: { forceIncludeUsage: true }, shutdown: { graceSeconds: 1 }, scheduling: { ...before.scheduling, fallbacks: 1 } });
    expect(capture.lines.filter((line) => line["msg"] === "config sections changed that take effect only after a restart")).toEqual([
      expect.objectContaining({ sections: ["inference", "shutdown"] }),
    ]);
    const body = chat("llama", "unchanged", { stream: true });
    const result = await rig.exchange({ request: chatRequest(body) });
    expect(result.upstreamRequest?.body.toString()).toBe(body);
  });

  it("an engine removed by a config reload gets no new picks; its open requests still release", async () => {
    rig = await startRig({ engines: 2 });
    const [a, b] = rig.engines.map((engine) => engine.address);
    rig.sidecar.reload({ ...rig.sidecar.config, pools: [{ name: "llama", models: ["llama"], endpoints: [a!], tokenizer: "o200k" }] });
    const stop = new AbortController();
    const open = rig.exchange({
      request: chatRequest(chat("llama", "hold on", { stream: true }), { [FAULT_HEADER]: "hang" }),
      signal: stop.signal,
    });
    await expect.poll(() => rig!.engines[0]!.stats().inFlight).toBe(1);
    rig.sidecar.reload({ ...rig.sidecar.config, pools: [{ name: "llama", models: ["llama"], endpoints: [b!], tokenizer: "o200k" }] });
    for (let i = 0; i < 5; i++) {
      const result = await rig.exchange({ request: chatRequest(chat("llama", `after reload ${i}`)) });
      expect(result.routedTo).toBe(b);
    }
    expect((await totalLoad(rig.sidecar)).requests).toBe(1);
    stop.abort();
    await open;
  });
});
