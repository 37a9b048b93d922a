import { afterEach, describe, expect, it } from "vitest";
import { FAULT_HEADER } from "../engine-sim/engine.js";
import { LogCapture, totalLoad } from "../support/sidecar.js";
import { chat, chatRequest, errorOf, ROUTE_HEADER, startRig, type Rig } from "./harness.js";

const REWRITE = "x-gateway-model-name-rewrite";

let rig: Rig | undefined;
afterEach(async () => {
  await rig?.expectIdle();
  await rig?.close();
  rig = undefined;
});

const twoPools = ([a, b]: string[]) => [
  { name: "llama", models: ["llama"], endpoints: [a!] },
  { name: "qwen", models: ["qwen"], endpoints: [b!] },
];

describe("no client steers routing", () => {
  it("a client's model-rewrite header is ignored and removed before the engine sees it (default: trust none)", async () => {
    rig = await startRig({ engines: 2, pools: twoPools });
    const [llama] = rig.engines.map((engine) => engine.address);
    const result = await rig.exchange({ request: chatRequest(chat("llama", "hi"), { [REWRITE]: "qwen" }) });
    expect(result.status).toBe(200);
    expect(result.routedTo).toBe(llama);
    expect(result.upstreamRequest?.headers[REWRITE]).toBeUndefined();
    // Nor can it reach a model no pool serves by naming one that is served.
    const unknown = await rig.exchange({ request: chatRequest(chat("mistral", "hi"), { [REWRITE]: "llama" }) });
    expect(unknown.status).toBe(404);
    expect(errorOf(unknown).code).toBe("model_not_found");
  });

  it("with extproc.trustedHeaders naming it, the gateway's model-rewrite header picks the pool", async () => {
    rig = await startRig({ engines: 2, pools: twoPools, sidecar: { extproc: { port: 0, trustedHeaders: [REWRITE] } } });
    const [, qwen] = rig.engines.map((engine) => engine.address);
    const result = await rig.exchange({ request: chatRequest(chat("llama", "hi"), { [REWRITE]: "qwen" }) });
    expect(result.routedTo).toBe(qwen);
    expect(result.upstreamRequest?.headers[REWRITE]).toBe("qwen");
  });

  it("BUFFERED: the untrusted header is removed on the first headers reply too", async () => {
    rig = await startRig({ engines: 2, pools: twoPools });
    const [llama] = rig.engines.map((engine) => engine.address);
    const result = await rig.exchange({
      request: chatRequest(chat("llama", "hi"), { [REWRITE]: "qwen", [ROUTE_HEADER]: "10.9.9.9:80" }),
      config: { requestBodyMode: "BUFFERED", responseBodyMode: "STREAMED" },
    });
    expect(result.routedTo).toBe(llama);
    expect(result.upstreamRequest?.headers[REWRITE]).toBeUndefined();
  });

  it("observer: an untrusted routing header is not read; the earlier picker's envoy.lb metadata is", async () => {
    const capture = new LogCapture();
    rig = await startRig({ engines: 2, capture, sidecar: { role: "observer" } });
    const [a, b] = rig.engines.map((engine) => engine.address) as [string, string];
    const stop = new AbortController();
    // The client names engine a; the earlier picker routed to b and said so in its metadata.
    const open = rig.exchange({
      request: chatRequest(chat("llama", "observe me", { stream: true }), { [ROUTE_HEADER]: b, [FAULT_HEADER]: "hang" }),
      metadataContext: { "envoy.lb": { [ROUTE_HEADER]: a } },
      signal: stop.signal,
    });
    await expect.poll(async () => (await rig!.sidecar.store.loads([a])).get(a)?.requests).toBe(1);
    expect((await rig.sidecar.store.loads([b])).get(b)?.requests ?? 0).toBe(0);
    stop.abort();
    await open;
    // A header alone, untrusted: nothing is counted.
    const alone = await rig.exchange({ request: chatRequest(chat("llama", "header only"), { [ROUTE_HEADER]: a }) });
    expect(alone.status).toBe(200);
    expect((await totalLoad(rig.sidecar)).requests).toBe(0);
    expect(capture.withMessage("request finished").map((line) => line["engine"])).toEqual([a]);
  });
});

describe("bodies held for picking, across all requests", () => {
  it("past extproc.maxHeldBodyBytes a request is refused 503 naming the limit, nothing reserved; room comes back after the pick", async () => {
    const limit = 64 * 1024;
    rig = await startRig({ engines: 1, sidecar: { extproc: { port: 0, maxRequestBodyBytes: limit, maxHeldBodyBytes: limit } } });
    let release = (): void => undefined;
    const released = new Promise<void>((resolve) => (release = resolve));
    const big = "x".repeat(40 * 1024);
    async function* slowBody(): AsyncGenerator<string> {
      yield `{"model": "llama", "messages": [{"role": "user", "content": "${big}`;
      await released;
      yield '"}]}';
    }
    const held = rig.exchange({ request: { ...chatRequest(""), body: slowBody() } });
    await new Promise((resolve) => setTimeout(resolve, 100));
    const refused = await rig.exchange({ request: chatRequest(chat("llama", big)) });
    expect(refused.status).toBe(503);
    expect(errorOf(refused)).toMatchObject({ code: "overloaded" });
    expect(errorOf(refused).message).toContain(`extproc.maxHeldBodyBytes (${limit} bytes`);
    expect(rig.engines[0]!.stats().received).toBe(0);
    release();
    expect((await held).status).toBe(200);
    expect((await rig.exchange({ request: chatRequest(chat("llama", big)) })).status).toBe(200);
  });

  it("a maxHeldBodyBytes below maxRequestBodyBytes is a config error naming both", async () => {
    await expect(startRig({ engines: 1, sidecar: { extproc: { port: 0, maxRequestBodyBytes: 2048, maxHeldBodyBytes: 1024 } } })).rejects.toThrow(
      /extproc\.maxHeldBodyBytes: must be at least extproc\.maxRequestBodyBytes \(2048\)/,
    );
  });
});
