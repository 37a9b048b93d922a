import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { FaultyStore, faultsAt, noFaults, type Fault, type StoreCall } from "../support/faulty-store.js";
import { LogCapture, startTestSidecar } from "../support/sidecar.js";

const capture = new LogCapture();
const faulty = new FaultyStore(noFaults);
let sidecar: Awaited<ReturnType<typeof startTestSidecar>>;
let base: string;
beforeAll(async () => {
  sidecar = await startTestSidecar([{ name: "alpha", models: ["a"], endpoints: ["10.0.0.1:8000"] }], {}, capture, faulty.store);
  base = `http://127.0.0.1:${sidecar.ports.http}`;
});
afterEach(() => faulty.use(noFaults));
afterAll(async () => {
  await sidecar.stop(0);
});

const faults: readonly Fault[] = ["throw", "reject"];

describe("GET /metrics when a store read fails", () => {
  const reads: readonly StoreCall[] = ["pools", "poolLoads", "size"];
  it.each(reads.flatMap((call) => faults.map((fault) => [call, fault] as const)))(
    "a %s that fails (%s) fails that scrape only: 500 naming it, and the next scrape works",
    async (call, fault) => {
      await fetch(`${base}/v1/load/stats`, { method: "POST", body: JSON.stringify({ cluster: "alpha", request_id: "m1", ip: "10.0.0.1" }) });
      faulty.use(faultsAt({ [call]: fault }));
      const failed = await fetch(`${base}/metrics`);
      expect(failed.status).toBe(500);
      expect(await failed.text()).toContain(`injected ${fault} in ${call}`);
      faulty.use(noFaults);
      const next = await fetch(`${base}/metrics`);
      expect(next.status).toBe(200);
      expect(await next.text()).toMatch(/^queued_num\{model_name="alpha",engine_ip="10\.0\.0\.1:8000"\} 1$/m);
      await fetch(`${base}/v1/load/stats`, { method: "DELETE", body: JSON.stringify({ request_id: "m1" }) });
      expect(faulty.inner.size()).toBe(0);
    },
  );
});
