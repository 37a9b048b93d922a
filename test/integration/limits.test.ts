import { status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { EnvoyExtProcClient, type Upstream } from "../envoy/ext-proc-client.js";
import { idle, LogCapture, startTestSidecar, totalLoad } from "../support/sidecar.js";
import { chat, chatRequest } from "./harness.js";

const pools = [{ name: "llama", models: ["llama"], endpoints: ["127.0.0.1:1", "127.0.0.1:2"] }];

/** Answers only when the request is reset: keeps its ext_proc stream open until then. */
const hanging: Upstream = (request) =>
  new Promise((_resolve, reject) => request.signal.addEventListener("abort", () => reject(new Error("reset")), { once: true }));

const quick: Upstream = async () => ({
  status: 200,
  headers: { "content-type": "application/json" },
  body: (async function* () {
    yield '{"choices":[]}';
  })(),
});

let stop: () => Promise<void> = async () => undefined;
afterEach(() => stop());

async function start(extproc: Record<string, unknown>, capture?: LogCapture) {
  const sidecar = await startTestSidecar(pools, { extproc: { port: 0, ...extproc } }, capture);
  const client = new EnvoyExtProcClient(`127.0.0.1:${sidecar.ports.extproc}`);
  stop = async () => {
    client.close();
    await sidecar.stop(0);
  };
  return { sidecar, client };
}

describe("extproc.maxStreams", () => {
  it("ends a stream over the limit at once with RESOURCE_EXHAUSTED naming the limit, reserves nothing, logs once a burst", async () => {
    const capture = new LogCapture();
    const { sidecar, client } = await start({ maxStreams: 3 }, capture);
    const reset = new AbortController();
    const held = Array.from({ length: 3 }, () =>
      client.exchange({ request: chatRequest(chat("llama", "hold")), upstream: hanging, signal: reset.signal, timeoutMs: 0 }),
    );
    await expect.poll(() => totalLoad(sidecar)).toMatchObject({ requests: 3, ledger: 3 });

    const refused = await Promise.all(Array.from({ length: 5 }, () => client.exchange({ request: chatRequest(chat("llama", "one more")), upstream: quick })));
    for (const result of refused) {
      expect(result.stream.serverStatus).toEqual({
        code: status.RESOURCE_EXHAUSTED,
        details: "metadata-center: 3 ext_proc streams are open, the limit extproc.maxStreams",
      });
      // A gRPC error with failure_mode_allow: false is Envoy's own 500; the engine never sees the request.
      expect(result.localReply?.status).toBe(500);
      expect(result.upstreamRequest).toBeUndefined();
    }
    expect(await totalLoad(sidecar)).toMatchObject({ requests: 3, ledger: 3 });
    const warnings = capture.withMessage("ext_proc streams over the limit refused with RESOURCE_EXHAUSTED");
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ limit: 3, key: "extproc.maxStreams" });

    // Ended streams give their places back.
    reset.abort();
    await Promise.all(held);
    await expect.poll(() => totalLoad(sidecar)).toEqual(idle);
    const again = await Promise.all(Array.from({ length: 3 }, () => client.exchange({ request: chatRequest(chat("llama", "again")), upstream: quick })));
    expect(again.map((result) => result.status)).toEqual([200, 200, 200]);
    await expect.poll(() => totalLoad(sidecar)).toEqual(idle);
  });
});

describe("extproc.maxMessageBytes", () => {
  const buffered = { requestBodyMode: "BUFFERED", responseBodyMode: "BUFFERED" } as const;
  /** A chat request whose JSON body is `bytes` long. */
  const bodyOf = (bytes: number): string => {
    const empty = chat("llama", "");
    return chat("llama", "x".repeat(bytes - empty.length));
  };

  it("by default takes a BUFFERED body of maxRequestBodyBytes in its one message, above gRPC's 4 MiB", async () => {
    const { sidecar, client } = await start({ maxRequestBodyBytes: 6 << 20 });
    expect(sidecar.config.extproc.maxMessageBytes).toBe(7 << 20);
    const body = bodyOf(6 << 20);
    const result = await client.exchange({ request: chatRequest(body), upstream: quick, config: buffered });
    expect(result.failure).toBeUndefined();
    expect(result.status).toBe(200);
    expect(result.upstreamRequest?.body.length).toBe(body.length);
    await expect.poll(() => totalLoad(sidecar)).toEqual(idle);
  });

  it("refuses a larger message with RESOURCE_EXHAUSTED; a body over maxRequestBodyBytes that fits is 413", async () => {
    const { sidecar, client } = await start({ maxRequestBodyBytes: 1 << 20, maxMessageBytes: 3 << 20 });
    const tooLarge = await client.exchange({ request: chatRequest(bodyOf(2 << 20)), upstream: quick, config: buffered });
    expect(tooLarge.status).toBe(413);
    expect(tooLarge.immediateResponse?.status).toBe(413);
    // 3.5 MiB: over the configured 3 MiB, under gRPC's 4 MiB default.
    const overMessage = await client.exchange({ request: chatRequest(bodyOf(7 << 19)), upstream: quick, config: buffered });
    expect(overMessage.stream.serverStatus?.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(overMessage.stream.serverStatus?.details).toMatch(/larger than max/);
    expect(overMessage.upstreamRequest).toBeUndefined();
    await expect.poll(() => totalLoad(sidecar)).toEqual(idle);
  });
});
