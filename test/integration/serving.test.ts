import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FAULT_HEADER } from "../engine-sim/engine.js";
import { healthStatus } from "../support/health.js";
import { startTestSidecar } from "../support/sidecar.js";
import { chat, chatRequest, startRig, type Rig } from "./harness.js";

let rig: Rig;
beforeAll(async () => {
  rig = await startRig({ engines: 2 });
});
afterAll(async () => {
  await rig.expectIdle();
  await rig.close();
});

const http = (path: string, headers: Record<string, string> = {}) =>
  fetch(`http://127.0.0.1:${rig.sidecar.ports.http}${path}`, { headers });

describe("gRPC health", () => {
  it.each(["liveness", "readiness", "envoy.service.ext_proc.v3.ExternalProcessor", ""])(
    "serves '%s' on the ext_proc port and on the health port",
    async (service) => {
      expect(await healthStatus(rig.sidecar.ports.extproc, service)).toBe("SERVING");
      expect(await healthStatus(rig.sidecar.ports.health, service)).toBe("SERVING");
    },
  );
});

describe("gRPC health on its own host", () => {
  it("listens on health.host, not the ext_proc host, whose port serves health too", async () => {
    const sidecar = await startTestSidecar([{ name: "llama", models: ["llama"], endpoints: ["127.0.0.1:1"] }], {
      extproc: { host: "127.0.0.1", port: 0 },
      health: { host: "127.0.0.2", port: 0 },
    });
    try {
      expect(await healthStatus(sidecar.ports.health, "readiness", { host: "127.0.0.2" })).toBe("SERVING");
      expect(await healthStatus(sidecar.ports.health, "readiness", { host: "127.0.0.1" })).toMatch(/^error: 14 UNAVAILABLE/);
      expect(await healthStatus(sidecar.ports.extproc, "readiness", { host: "127.0.0.1" })).toBe("SERVING");
    } finally {
      await sidecar.stop(0);
    }
  });
});

describe("HTTP", () => {
  it("answers /healthz and /readyz", async () => {
    expect((await http("/healthz")).status).toBe(200);
    expect((await http("/readyz")).status).toBe(200);
  });

  it("serves the metadata-center load view of a pool, counting what is in flight", async () => {
    const stop = new AbortController();
    const open = rig.exchange({ request: chatRequest(chat("llama", "hold", { stream: true }), { [FAULT_HEADER]: "hang" }), signal: stop.signal });
    await expect.poll(() => rig.engines.reduce((n, engine) => n + engine.stats().inFlight, 0)).toBe(1);
    const response = await http("/v1/load/stats?cluster=llama", { TraceId: "trace-123" });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { status: string; error: null; trace_id: string; data: Array<Record<string, number | string>> };
    expect(body).toMatchObject({ status: "OK", error: null, trace_id: "trace-123" });
    expect(body.data.map((engine) => engine["endpoint"]).sort()).toEqual(rig.engines.map((engine) => engine.address).sort());
    const busy = body.data.find((engine) => engine["queued_req_num"] === 1);
    expect(busy).toMatchObject({ ip: "127.0.0.1", prefill_req_num: 1 });
    expect(busy?.["prompt_length"]).toBeGreaterThan(0);
    expect(busy?.["updated_time"]).toBeGreaterThan(Date.now() * 1e6 - 60e9 * 1e3);
    expect(body.data.filter((engine) => engine["queued_req_num"] === 0)).toHaveLength(1);
    stop.abort();
    await open;
  });

  it("answers an unknown cluster with data null and a missing one with 400 / 40001400", async () => {
    expect(await (await http("/v1/load/stats?cluster=nope")).json()).toMatchObject({ status: "OK", data: null });
    const missing = await http("/v1/load/stats");
    expect(missing.status).toBe(400);
    expect(await missing.json()).toMatchObject({ status: "ERROR", error: { code: 40001400 }, data: null });
  });
});
