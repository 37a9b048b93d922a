import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { HttpApi } from "../../src/api/http.js";
import { Metrics } from "../../src/api/metrics.js";
import { MemoryLoadStore } from "../../src/load/memory-store.js";
import type { LoadStore } from "../../src/load/store.js";
import { PoolDirectory } from "../../src/pools/pools.js";
import { PickHistory } from "../../src/scheduling/pick-history.js";
import { Picker } from "../../src/scheduling/picker.js";
import { FaultyStore, faultsAt, noFaults, type Fault, type StoreCall } from "../support/faulty-store.js";
import { schedulingDefaults } from "../support/scheduling.js";
import { idle, LogCapture, startTestSidecar, totalLoad } from "../support/sidecar.js";

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
  expect(await totalLoad(sidecar)).toEqual(idle);
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

interface Route {
  name: string;
  /** The store calls this route makes (each one faulted in turn). */
  calls: readonly StoreCall[];
  /** Opens what the route needs to reach every call (e.g. a request to release). */
  setup?: () => Promise<unknown>;
  send: () => Promise<Response>;
  /** What the route answers once the faults stop. */
  status: number;
  cleanup?: () => Promise<unknown>;
}

const json = (method: string, path: string, body: unknown) => fetch(`${base}${path}`, { method, body: JSON.stringify(body) });
const addFault = () => json("POST", "/v1/load/stats", { cluster: "alpha", request_id: "f1", prompt_length: 3, ip: "10.0.0.1" });
const endFault = () => json("DELETE", "/v1/load/stats", { request_id: "f1" });

const routes: Route[] = [
  { name: "GET /v1/load/stats", calls: ["poolLoads"], send: () => fetch(`${base}/v1/load/stats?cluster=alpha`), status: 200 },
  { name: "POST /v1/load/stats", calls: ["reserve"], send: addFault, status: 200, cleanup: endFault },
  {
    name: "POST /v1/load/stats after an early DELETE /v1/load/stats",
    calls: ["release"],
    setup: endFault,
    send: addFault,
    status: 200,
    cleanup: endFault,
  },
  { name: "DELETE /v1/load/prompt", calls: ["has", "firstToken"], setup: addFault, send: () => json("DELETE", "/v1/load/prompt", { request_id: "f1" }), status: 200, cleanup: endFault },
  { name: "DELETE /v1/load/stats", calls: ["release"], setup: addFault, send: endFault, status: 200 },
  { name: "GET /debug/pools", calls: ["pools", "poolLoads", "size"], send: () => fetch(`${base}/debug/pools`), status: 200 },
];

describe("every HTTP route when a store call it makes fails", () => {
  it.each(routes.flatMap((route) => route.calls.flatMap((call) => faults.map((fault) => [route.name, call, fault, route] as const))))(
    "%s, %s failing (%s): 500 naming it, one log line, then served again",
    async (_, call, fault, route) => {
      await route.setup?.();
      const logged = capture.withMessage("http request failed").length;
      faulty.use(faultsAt({ [call]: fault }));
      const failed = await route.send();
      expect(failed.status).toBe(500);
      expect(await failed.json()).toMatchObject({
        status: "ERROR",
        error: { code: 50001000, message: "internal server error", reason: `InjectedStoreError: injected ${fault} in ${call}` },
        data: null,
      });
      expect(capture.withMessage("http request failed").slice(logged)).toMatchObject([{ reason: `InjectedStoreError: injected ${fault} in ${call}` }]);
      faulty.use(noFaults);
      expect((await route.send()).status).toBe(route.status);
      await route.cleanup?.();
      // A retry left waiting by the route must not count anything later either.
      await new Promise((resolve) => setTimeout(resolve, route.setup === endFault ? 1100 : 0));
      expect(await totalLoad(sidecar)).toEqual(idle);
    },
  );

  it("the routes that read no store answer while every store call fails", async () => {
    faulty.use(() => "reject");
    expect(await (await fetch(`${base}/healthz`)).text()).toBe("ok");
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    expect(await (await json("POST", "/log/level", { LevelParam: "INFO" })).json()).toMatchObject({ status: "OK" });
    expect(await (await fetch(`${base}/v1/load/stats`)).json()).toMatchObject({ status: "ERROR", error: { code: 40001400 } });
    expect((await fetch(`${base}/debug/picks`)).status).toBe(200);
  });
});

/** The HTTP API alone on a free port, over this store, with a short scrape timeout. */
async function apiOver(store: LoadStore, lines: LogCapture): Promise<string> {
  const directory = new PoolDirectory([]);
  const metrics = new Metrics({ store, directory: () => directory }, 100);
  const picker = new Picker(store, () => directory, schedulingDefaults);
  const log = pino({ level: "info" }, lines);
  const api = new HttpApi({ host: "127.0.0.1", port: 0, token: undefined, store, directory: () => directory, picker: () => picker, picks: new PickHistory(0, log), metrics, ready: () => true, log });
  await api.start();
  onTestFinished(() => api.close());
  return `http://127.0.0.1:${api.port}`;
}

describe("a store that hangs or answers what cannot be sent", () => {
  it("a store read that hangs fails that scrape after the scrape timeout, and the next scrape works", async () => {
    const hanging = new FaultyStore(faultsAt({ pools: "hang" }));
    const url = await apiOver(hanging.store, new LogCapture());
    const failed = await fetch(`${url}/metrics`);
    expect(failed.status).toBe(500);
    expect(await failed.text()).toContain("the store read took longer than 100 ms");
    hanging.use(noFaults);
    expect((await fetch(`${url}/metrics`)).status).toBe(200);
  });

  it("an answer that cannot be encoded (the envelope itself throws) is a 500 naming why, and the next request works", async () => {
    class NonsenseStore extends MemoryLoadStore {
      override size(): number {
        return 1n as unknown as number;
      }
    }
    const lines = new LogCapture();
    const url = await apiOver(new NonsenseStore(), lines);
    const failed = await fetch(`${url}/debug/pools`);
    expect(failed.status).toBe(500);
    expect(await failed.json()).toMatchObject({ error: { code: 50001000, reason: expect.stringContaining("BigInt") } });
    expect(lines.withMessage("http request failed")).toHaveLength(1);
    expect(await (await fetch(`${url}/healthz`)).text()).toBe("ok");
  });
});
