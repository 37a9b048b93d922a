import { describe, expect, it } from "vitest";
import type { Upstream } from "../envoy/ext-proc-client.js";
import { FAULT_HEADER } from "../engine-sim/engine.js";
import { LogCapture } from "../support/sidecar.js";
import { chat, chatRequest, startRig } from "./harness.js";

describe("shutdown", () => {
  it("streams still open after the grace end with outcome shutdown, never held against the engine; their releases are done when stop resolves", async () => {
    const capture = new LogCapture();
    const rig = await startRig({ engines: 1, capture, sidecar: { scheduling: { ejectAfterErrors: 1 } } });
    const engine = rig.engines[0]!.address;
    // An engine that never answers: the exchange has no response phase when it is cut.
    const silent: Upstream = (request) => new Promise((_, reject) => request.signal.addEventListener("abort", () => reject(new Error("reset")), { once: true }));
    const streaming = Array.from({ length: 3 }, (_, i) =>
      rig.exchange({ request: chatRequest(chat("llama", `streaming ${i}`, { stream: true }), { [FAULT_HEADER]: "hang", "x-request-id": `streaming-${i}` }) }),
    );
    const unanswered = Array.from({ length: 2 }, (_, i) =>
      rig.exchange({ request: chatRequest(chat("llama", `unanswered ${i}`), { "x-request-id": `unanswered-${i}` }), upstream: silent }),
    );
    await expect.poll(async () => rig.sidecar.store.size()).toBe(5);
    await rig.sidecar.stop(200);
    expect(await rig.sidecar.store.size()).toBe(0);
    const results = await Promise.all([...streaming, ...unanswered]);
    expect(results.every((result) => result.status === undefined || result.reset !== undefined || result.failure !== undefined)).toBe(true);
    const finished = capture.withMessage("request finished");
    expect(finished.map((line) => [line["requestId"], line["outcome"], line["engine"]]).sort()).toEqual(
      ["streaming-0", "streaming-1", "streaming-2", "unanswered-0", "unanswered-1"].map((id) => [id, "shutdown", engine]),
    );
    expect(capture.withMessage("engine ejected after consecutive errors")).toEqual([]);
    rig.client.close();
    await Promise.all(rig.engines.map((sim) => sim.close()));
  });
});
