import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiClient } from "../support/http.js";
import { scrape, valueOf } from "../support/prometheus.js";
import { idle, startTestSidecar, totalLoad } from "../support/sidecar.js";

let sidecar: Awaited<ReturnType<typeof startTestSidecar>>;
beforeAll(async () => {
  sidecar = await startTestSidecar([{ name: "alpha", models: ["a"], endpoints: ["10.0.0.1:8000"] }], {
    load: { ttlSeconds: 0.05, sweepSeconds: 0.02 },
  });
});
afterAll(async () => {
  await sidecar.stop(0);
});

describe("abandoned API requests", () => {
  it("expire after load.ttlSeconds: counters back to zero, counted in metadata_center_expired_total, a late delete is 404", async () => {
    const call = apiClient(sidecar.ports.http);
    await call("POST", "/v1/load/stats", { cluster: "alpha", request_id: "never-ended", prompt_length: 77, ip: "10.0.0.1" });
    await call("POST", "/v1/load/stats", { cluster: "alpha", request_id: "prompt-only", prompt_length: 5, ip: "10.0.0.1" });
    await call("DELETE", "/v1/load/prompt", { request_id: "prompt-only" });
    await expect.poll(() => sidecar.store.size()).toBe(0);
    expect(await totalLoad(sidecar)).toEqual(idle);
    expect(valueOf(await scrape(sidecar.ports.http), "metadata_center_expired_total")).toBe(2);
    expect(await call("DELETE", "/v1/load/stats", { request_id: "never-ended" })).toMatchObject({ httpStatus: 404, error: { code: 40001404 } });
  });
});
