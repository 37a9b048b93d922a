import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
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

interface Row {
  ip: string;
  queued_req_num: number;
  prompt_length: number;
}

describe("abandoned API requests", () => {
  // Follows TestCronClean and TestLoadStats_GC (pkg/meta/load/load_test.go): a request past the
  // expiry is dropped, its engine stays listed at zero until it has had no update for the expiry
  // time, then goes; a cluster with no engine left answers data: null.
  it("leave their engine listed at zero until the engine expires too, then the cluster answers data: null", async () => {
    // Long enough an expiry that each state is seen on a busy machine.
    const slower = await startTestSidecar([{ name: "alpha", models: ["a"], endpoints: ["10.0.0.1:8000"] }], { load: { ttlSeconds: 0.5, sweepSeconds: 0.02 } });
    onTestFinished(() => slower.stop(0));
    const call = apiClient(slower.ports.http);
    await call("POST", "/v1/load/stats", { cluster: "gc-domain", request_id: "gc-1", prompt_length: 512, ip: "192.168.100.1" });
    const rows = async () => (await call<Row[] | null>("GET", "/v1/load/stats?cluster=gc-domain")).data;
    expect(await rows()).toMatchObject([{ ip: "192.168.100.1", queued_req_num: 1, prompt_length: 512 }]);
    const seen: string[] = [];
    await expect
      .poll(async () => {
        const now = await rows();
        const state = now === null ? "gone" : now.map((row) => `${row.queued_req_num}/${row.prompt_length}`).join(",");
        if (seen.at(-1) !== state) seen.push(state);
        return state;
      }, { interval: 5, timeout: 5000 })
      .toBe("gone");
    expect(seen).toEqual(["1/512", "0/0", "gone"]);
    expect(await totalLoad(slower)).toEqual(idle);
  });


  it("expire after load.ttlSeconds: counters back to zero, counted in metadata_center_expired_total, a late delete answered 200 as the Go service does", async () => {
    const call = apiClient(sidecar.ports.http);
    const expiredBefore = valueOf(await scrape(sidecar.ports.http), "metadata_center_expired_total") ?? 0;
    await call("POST", "/v1/load/stats", { cluster: "alpha", request_id: "never-ended", prompt_length: 77, ip: "10.0.0.1" });
    await call("POST", "/v1/load/stats", { cluster: "alpha", request_id: "prompt-only", prompt_length: 5, ip: "10.0.0.1" });
    await call("DELETE", "/v1/load/prompt", { request_id: "prompt-only" });
    await expect.poll(() => sidecar.store.size()).toBe(0);
    expect(await totalLoad(sidecar)).toEqual(idle);
    expect(valueOf(await scrape(sidecar.ports.http), "metadata_center_expired_total")).toBe(expiredBefore + 2);
    expect(await call("DELETE", "/v1/load/stats", { request_id: "never-ended" })).toMatchObject({ httpStatus: 200, status: "OK", error: null });
    expect(await totalLoad(sidecar)).toEqual(idle);
  });
});
