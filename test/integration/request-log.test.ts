import { afterEach, describe, expect, it } from "vitest";
import { FAULT_HEADER } from "../engine-sim/engine.js";
import { closedPort } from "../support/ports.js";
import { LogCapture } from "../support/sidecar.js";
import { chat, chatRequest, startRig, type Rig } from "./harness.js";

let rig: Rig | undefined;
afterEach(async () => {
  await rig?.expectIdle();
  await rig?.close();
  rig = undefined;
});


/** Every line about one request id. */
const about = (capture: LogCapture, requestId: string | undefined) =>
  capture.lines.filter((line) => line["requestId"] === requestId && requestId !== undefined);

describe("one structured log line per request", () => {
  it("for every ending: ok, upstream error, client reset, refusals", async () => {
    const capture = new LogCapture();
    rig = await startRig({ engines: 1, capture, sidecar: { extproc: { port: 0, maxRequestBodyBytes: 4000 } } });
    const cases = [
      { outcome: "ok", request: chatRequest(chat("llama", "fine", { stream: true, stream_options: { include_usage: true } }), { "x-request-id": "r-ok" }) },
      { outcome: "upstream_error", request: chatRequest(chat("llama", "boom"), { [FAULT_HEADER]: "status=500", "x-request-id": "r-500" }) },
      { outcome: "refused", request: chatRequest("{not json", { "x-request-id": "r-400" }) },
      { outcome: "refused", request: chatRequest(chat("llama", "z".repeat(9000)), { "x-request-id": "r-413" }) },
    ];
    for (const { request } of cases) await rig.exchange({ request });
    await rig.exchange({
      request: chatRequest(chat("llama", "bye", { stream: true }), { "x-request-id": "r-reset" }),
      reset: (at) => at.at === "response-body",
    });
    await rig.expectIdle();
    await expect.poll(() => capture.lines.filter((line) => String(line["requestId"]).startsWith("r-")).length).toBe(5);
    for (const { outcome, request } of cases) {
      const lines = about(capture, (request.headers as Record<string, string>)["x-request-id"]);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatchObject({ outcome });
    }
    expect(about(capture, "r-reset")).toEqual([expect.objectContaining({ outcome: "client_reset", pool: "llama" })]);
    const ok = about(capture, "r-ok")[0]!;
    expect(ok).toMatchObject({ model: "llama", pool: "llama", engine: rig.engines[0]!.address, status: 200, msg: "request finished" });
    expect(ok["promptTokens"]).toBeGreaterThan(0);
    expect(ok["reportedPromptTokens"]).toBeGreaterThan(0);
    expect(ok["completionTokens"]).toBeGreaterThan(0);
    expect(ok["ttftMs"]).toBeGreaterThanOrEqual(0);
    expect(ok["durationMs"]).toBeGreaterThanOrEqual(ok["ttftMs"] as number);
    expect(about(capture, "r-413")[0]).toMatchObject({ status: 413, reason: "request_too_large" });
    expect(about(capture, "r-400")[0]).toMatchObject({ status: 400, reason: "invalid_request" });
  });

  it("no response phase (Envoy's local reply) and expiry each log once", async () => {
    const capture = new LogCapture();
    const port = await closedPort();
    rig = await startRig({
      engines: 1,
      capture,
      sidecar: { load: { ttlSeconds: 0.3, sweepSeconds: 0.05 } },
      pools: ([a]) => [
        { name: "llama", models: ["llama"], endpoints: [a!] },
        { name: "gone", models: ["gone"], endpoints: [`127.0.0.1:${port}`] },
      ],
    });
    await rig.exchange({ request: chatRequest(chat("gone", "anyone?"), { "x-request-id": "r-local" }) });
    await expect.poll(() => about(capture, "r-local")).toEqual([expect.objectContaining({ outcome: "no_response" })]);

    const stop = new AbortController();
    const open = rig.exchange({
      request: chatRequest(chat("llama", "forgotten", { stream: true }), { [FAULT_HEADER]: "hang", "x-request-id": "r-expire" }),
      signal: stop.signal,
      timeoutMs: 0,
    });
    await expect.poll(() => capture.withMessage("request expired").length, { timeout: 5000 }).toBe(1);
    expect(capture.withMessage("request expired")[0]).toMatchObject({ outcome: "expired", pool: "llama", engine: rig.engines[0]!.address });
    stop.abort();
    await open;
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(about(capture, "r-expire")).toEqual([]);
  });
});
