import { afterEach, describe, expect, it } from "vitest";
import type { Upstream, UpstreamResponse } from "../envoy/ext-proc-client.js";
import { FaultyStore, faultsAt, noFaults, randomFaults, type Fault, type StoreCall } from "../support/faulty-store.js";
import { scrape, valueOf } from "../support/prometheus.js";
import { LogCapture, totalLoad } from "../support/sidecar.js";
import { chat, chatRequest, errorOf, startRig, type Rig } from "./harness.js";

let rig: Rig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

/** An engine that answers with exactly these SSE bytes, each string one chunk. */
const sse =
  (...chunks: string[]): Upstream =>
  async (): Promise<UpstreamResponse> => ({
    status: 200,
    headers: { "content-type": "text/event-stream" },
    body: (async function* () {
      for (const chunk of chunks) yield chunk;
    })(),
  });

const delta = (content: string) => `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content } }] })}\n\n`;
const usage = (prompt: unknown, completion: unknown) => `data: {"choices":[],"usage":{"prompt_tokens":${String(prompt)},"completion_tokens":${String(completion)}}}\n\n`;

/** One plain exchange through the real engines: the sidecar still serves. */
async function stillServes(r: Rig, headers: Record<string, string> = {}): Promise<void> {
  const result = await r.exchange({ request: chatRequest(chat("llama", "still there?", { stream: true }), headers) });
  expect(result.status).toBe(200);
  expect(result.failure).toBeUndefined();
}

describe("what an engine sends cannot take the sidecar down", () => {
  it("one SSE event nested 100,000 deep: echoed to the client, counted, and the sidecar carries on", async () => {
    rig = await startRig({ engines: 1 });
    const depth = 100_000;
    const nested = `data: {"error": ${"[".repeat(depth)}${"]".repeat(depth)}}\n\n`;
    const result = await rig.exchange({ request: chatRequest(chat("llama", "hi", { stream: true })), upstream: sse(delta("a"), nested, "data: [DONE]\n\n") });
    expect(result.status).toBe(200);
    expect(result.body.toString()).toContain(nested);
    await rig.expectIdle();
    await stillServes(rig);
    await rig.expectIdle();
  });

  for (const [prompt, completion] of [
    ["1e400", 3],
    ["1e300", 3],
    [5, "-4"],
    [5, "2.5"],
    [5, '"many"'],
    ["10000001", 1],
  ] as const) {
    it(`usage {prompt_tokens: ${prompt}, completion_tokens: ${completion}} is ignored with a warning; counters stay exact`, async () => {
      const capture = new LogCapture();
      rig = await startRig({ engines: 1, capture });
      let midStream: Awaited<ReturnType<typeof totalLoad>> | undefined;
      const sidecar = rig.sidecar;
      const upstream: Upstream = async () => ({
        status: 200,
        headers: { "content-type": "text/event-stream" },
        body: (async function* () {
          yield delta("one");
          yield usage(prompt, completion);
          await new Promise((resolve) => setTimeout(resolve, 50));
          midStream = await totalLoad(sidecar);
          yield "data: [DONE]\n\n";
        })(),
      });
      const result = await rig.exchange({ request: chatRequest(chat("llama", "count me", { stream: true })), upstream });
      expect(result.status).toBe(200);
      expect(midStream?.requests).toBe(1);
      expect(Number.isInteger(midStream?.tokensHeld) && (midStream?.tokensHeld ?? -1) > 0).toBe(true);
      await rig.expectIdle();
      const warnings = capture.withMessage("engine usage ignored: not a sane token count");
      expect(warnings).toHaveLength(1);
      expect(String(warnings[0]!["usage"])).toMatch(/is not a whole number of tokens between 0 and 10000000/);
      expect(capture.withMessage("request finished")[0]).toMatchObject({ outcome: "ok" });
    });
  }

  it("forceIncludeUsage with a request nested too deeply to write back: routed unchanged, nothing failed", async () => {
    const capture = new LogCapture();
    rig = await startRig({ engines: 1, capture, sidecar: { inference: { forceIncludeUsage: true }, scheduling: { ejectAfterErrors: 1 } } });
    const depth = 100_000;
    // With stream_options of its own the body is written back whole, which this depth defeats.
    const body = `{"model": "llama", "stream": true, "stream_options": {"extra": 1}, "messages": [{"role": "user", "content": "hi"}], "metadata": ${"[".repeat(depth)}${"]".repeat(depth)}}`;
    const result = await rig.exchange({ request: chatRequest(body), upstream: sse(delta("x"), "data: [DONE]\n\n") });
    expect(result.status).toBe(200);
    expect(result.upstreamRequest?.body.toString()).toBe(body);
    await rig.expectIdle();
    // Without, the option is spliced in and the rest goes on as sent, however deep.
    const bare = body.replace('"stream_options": {"extra": 1}, ', "");
    const spliced = await rig.exchange({ request: chatRequest(bare), upstream: sse(delta("x"), "data: [DONE]\n\n") });
    expect(spliced.upstreamRequest?.body.toString()).toBe(`{"stream_options":{"include_usage":true},${bare.slice(1)}`);
    await rig.expectIdle();
    expect(capture.withMessage("request finished")).toEqual([expect.objectContaining({ outcome: "ok" }), expect.objectContaining({ outcome: "ok" })]);
    expect(capture.withMessage("request failed")).toEqual([]);
    // The engine was not held responsible: it is still picked.
    await stillServes(rig);
    await rig.expectIdle();
  });

  it("the same on the parsing thread (a body above 512 KiB): routed unchanged, the thread not lost", async () => {
    const capture = new LogCapture();
    rig = await startRig({ engines: 1, capture, sidecar: { inference: { forceIncludeUsage: true } } });
    const depth = 100_000;
    const padding = "x".repeat(600 * 1024);
    const body = `{"model": "llama", "stream": true, "stream_options": {"extra": 1}, "messages": [{"role": "user", "content": "${padding}"}], "metadata": ${"[".repeat(depth)}${"]".repeat(depth)}}`;
    const result = await rig.exchange({ request: chatRequest(body), upstream: sse(delta("x"), "data: [DONE]\n\n") });
    expect(result.status).toBe(200);
    expect(result.upstreamRequest?.body.toString()).toBe(body);
    await rig.expectIdle();
    expect(capture.lines.filter((line) => String(line["msg"]).includes("thread lost"))).toEqual([]);
    expect(capture.withMessage("request finished")).toEqual([expect.objectContaining({ outcome: "ok" })]);
  });
});

/** The calls an exchange makes, and how a failure in each shows to the client. */
const exchangeCalls: Array<{ call: StoreCall; during: "request" | "response" }> = [
  { call: "pickAndReserve", during: "request" },
  { call: "firstToken", during: "response" },
  { call: "addGenerated", during: "response" },
  { call: "reconcile", during: "response" },
  { call: "release", during: "response" },
];

describe("a failing load store fails that exchange alone", () => {
  for (const { call, during } of exchangeCalls) {
    for (const fault of ["throw", "reject"] as const satisfies readonly Fault[]) {
      it(`${call} ${fault}s: ${during === "request" ? "500 in the OpenAI shape" : "the stream ends"}, one line naming the cause, nothing leaked`, async () => {
        const capture = new LogCapture();
        const faulty = new FaultyStore(noFaults);
        rig = await startRig({ engines: 1, capture, store: faulty.store });
        faulty.use(faultsAt({ [call]: fault }));
        const result = await rig.exchange({
          request: chatRequest(chat("llama", "faulty", { stream: true, stream_options: { include_usage: true } }), { "x-request-id": "faulty" }),
        });
        faulty.use(noFaults);
        expect(faulty.faults.map((f) => f.call)).toContain(call);
        if (during === "request") {
          expect(result.status).toBe(500);
          expect(errorOf(result)).toMatchObject({ code: "internal_error", type: "server_error" });
          expect(rig.engines[0]!.stats().received).toBe(0);
          expect(valueOf(await scrape(rig.sidecar.ports.http), "metadata_center_refusals_total", { reason: "internal_error" })).toBe(1);
        } else if (call !== "release") {
          // The response was under way: Envoy resets it (the gRPC error), or it had already ended.
          expect(result.stream.serverStatus?.code ?? 0).not.toBe(0);
        }
        const lines = capture.lines.filter((line) => line["requestId"] === "faulty");
        expect(lines).toHaveLength(1);
        expect(lines[0]).toMatchObject({ cause: `injected ${fault} in ${call}` });
        // A release that failed leaves its entry to the TTL sweep; everything else is released.
        const open = call === "release" ? 1 : 0;
        await expect.poll(() => faulty.inner.size()).toBe(open);
        faulty.inner.expire(0);
        await rig.expectIdle();
        await stillServes(rig);
        await rig.expectIdle();
      });
    }
  }

  for (const role of ["picker", "observer"] as const) {
  it(`${role}: throws, rejections and hangs at random call sites over 300 exchanges in every body mode: each ends, no count drifts, the sidecar serves on`, async () => {
    const faulty = new FaultyStore(noFaults);
    rig = await startRig({
      engines: 2,
      store: faulty.store,
      sidecar: { role, extproc: { port: 0, trustedHeaders: ["x-gateway-destination-endpoint"] }, scheduling: { ejectAfterErrors: 0 } },
    });
    faulty.use(randomFaults({ seed: 7, rate: 0.05, calls: ["pickAndReserve", "reserve", "firstToken", "addGenerated", "reconcile", "move", "release"] }));
    const r = rig;
    const engines = r.engines.map((engine) => engine.address);
    const modes = [
      {},
      { requestBodyMode: "BUFFERED", responseBodyMode: "STREAMED" },
      { requestBodyMode: "FULL_DUPLEX_STREAMED", responseBodyMode: "NONE" },
    ] as const;
    const shapes = [
      () => chat("llama", "stream", { stream: true, stream_options: { include_usage: true } }),
      () => chat("llama", "whole"),
      () => chat("llama", "stream, no usage", { stream: true }),
    ];
    const results = await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        r.exchange({
          // The observer counts on the engine an earlier picker named.
          request: chatRequest(shapes[i % shapes.length]!(), role === "observer" ? { "x-gateway-destination-endpoint": engines[i % 2]! } : {}),
          config: modes[Math.floor(i / 3) % modes.length],
          // A hung store call leaves the client waiting: it gives up, as a client behind Envoy's timeout does.
          timeoutMs: 3000,
          reset: i % 10 === 9 ? (at) => at.at === "response-body" : undefined,
        }),
      ),
    );
    faulty.use(noFaults);
    expect(results.length).toBe(300);
    expect(faulty.faults.length).toBeGreaterThan(20);
    // Whatever is still open had a fault injected on its own id (a release that failed or never came).
    const faulted = new Set(faulty.faults.map((fault) => fault.id));
    await new Promise((resolve) => setTimeout(resolve, 100));
    const open = await Promise.all([...faulted].map(async (id) => (id !== undefined && faulty.inner.has(id) ? id : undefined)));
    expect(faulty.inner.size()).toBe(open.filter((id) => id !== undefined).length);
    faulty.inner.expire(0);
    await rig.expectIdle();
    await stillServes(rig, role === "observer" ? { "x-gateway-destination-endpoint": engines[0]! } : {});
    await rig.expectIdle();
  }, 60_000);
  }
});
