import { connect } from "node:net";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HttpApi } from "../../src/api/http.js";
import { Metrics } from "../../src/api/metrics.js";
import { MemoryLoadStore } from "../../src/load/memory-store.js";
import { PoolDirectory } from "../../src/pools/pools.js";
import { PickHistory } from "../../src/scheduling/pick-history.js";
import { Picker } from "../../src/scheduling/picker.js";
import { rawExchange, rawRequest, type RawAnswer } from "../support/raw-http.js";
import { schedulingDefaults } from "../support/scheduling.js";
import { idle, LogCapture, startTestSidecar, totalLoad } from "../support/sidecar.js";

const capture = new LogCapture();
let sidecar: Awaited<ReturnType<typeof startTestSidecar>>;
let port: number;
beforeAll(async () => {
  sidecar = await startTestSidecar([{ name: "alpha", models: ["a"], endpoints: ["10.0.0.1:8000"] }], {}, capture);
  port = sidecar.ports.http;
});
afterAll(async () => {
  expect(await totalLoad(sidecar)).toEqual(idle);
  await sidecar.stop(0);
});

const envelopeOf = (answer: RawAnswer | undefined): { status: string; error: { code: number; reason: string } | null } =>
  JSON.parse(answer?.body ?? "null") as { status: string; error: { code: number; reason: string } | null };

async function expectServing(): Promise<void> {
  const answer = await rawRequest(port, "GET", "/healthz");
  expect(answer).toMatchObject({ status: 200, body: "ok" });
}

describe("request targets no route can match", () => {
  const targets = ["//", "///", "//:", "//%zz", "//@", "http://", "/\\\\", "*", "/%", "/a%2", "//v1/load/stats", "/v1/load/stats/", "/v1/./load/stats"];
  it.each(targets.flatMap((target) => ["GET", "POST"].map((method) => [method, target] as const)))(
    "%s %s gets a 400 or 404 envelope, and the server serves on",
    async (method, target) => {
      const answer = await rawRequest(port, method, target, method === "POST" ? "{}" : undefined);
      expect([400, 404]).toContain(answer?.status);
      expect(envelopeOf(answer)).toMatchObject({ status: "ERROR", error: { code: 40001400 } });
      await expectServing();
    },
  );

  it("names a malformed percent-escape with 400", async () => {
    const answer = await rawRequest(port, "GET", "/healthz%zz");
    expect(answer?.status).toBe(400);
    expect(envelopeOf(answer).error?.reason).toContain("malformed percent-escape");
  });

  it("answers bytes Node's parser refuses (a raw non-ASCII target) with a 400 envelope", async () => {
    const answer = await rawRequest(port, "GET", Buffer.from("/é", "utf8"));
    expect(answer?.status).toBe(400);
    expect(envelopeOf(answer)).toMatchObject({ status: "ERROR", error: { code: 40001400, reason: expect.stringContaining("could not be parsed") } });
    await expectServing();
  });
});

describe("request targets read as Go's net/http reads them", () => {
  it("routes an absolute-form target by its path, a percent-encoded path decoded, and ignores a fragment", async () => {
    expect(await rawRequest(port, "GET", "http://any.host:1/healthz")).toMatchObject({ status: 200, body: "ok" });
    const stats = await rawRequest(port, "GET", "/v1/load/%73tats?cluster=alpha");
    expect(stats?.status).toBe(200);
    expect(envelopeOf(stats)).toMatchObject({ status: "OK" });
    expect(await rawRequest(port, "GET", "/healthz#part")).toMatchObject({ status: 200, body: "ok" });
  });
});

describe("a client that leaves mid-request", () => {
  const body = JSON.stringify({ cluster: "alpha", request_id: "half", prompt_length: 5, ip: "10.0.0.1" });
  const head = `POST /v1/load/stats HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n`;

  it("by closing the connection after half its body costs nothing: no error logged, nothing counted, the server serves on", async () => {
    const socket = connect(port, "127.0.0.1");
    await new Promise<void>((resolve) => socket.write(head + body.slice(0, 10), () => resolve()));
    await new Promise((resolve) => setTimeout(resolve, 50));
    socket.destroy();
    await expectServing();
    expect(capture.withMessage("http request failed")).toEqual([]);
    expect(await sidecar.store.size()).toBe(0);
  });

  it("by ending its side after half its body gets a 400 naming the parse error", async () => {
    const answer = await rawExchange(port, head + body.slice(0, 10), { endAfter: true });
    expect(answer?.status).toBe(400);
    expect(envelopeOf(answer).error?.reason).toContain("HPE_INVALID_EOF_STATE");
    await expectServing();
    expect(capture.withMessage("http request failed")).toEqual([]);
    expect(await sidecar.store.size()).toBe(0);
  });
});

/** Metrics whose HTTP observation throws, to reach the `finish` listener's failure path. */
class ThrowingMetrics extends Metrics {
  override observeHttp(): void {
    throw new Error("injected observeHttp failure");
  }
}

describe("a failure after the answer was sent", () => {
  it("is logged once per request and the server serves on", async () => {
    const store = new MemoryLoadStore();
    const directory = new PoolDirectory([]);
    const lines = new LogCapture();
    const api = new HttpApi({
      host: "127.0.0.1",
      port: 0,
      token: undefined,
      store,
      directory: () => directory,
      picker: () => new Picker(store, () => directory, schedulingDefaults),
      picks: new PickHistory(0, pino({ level: "silent" })),
      metrics: new ThrowingMetrics({ store, directory: () => directory }),
      ready: () => true,
      log: pino({ level: "info" }, lines),
    });
    await api.start();
    try {
      for (let i = 0; i < 3; i += 1) expect(await rawRequest(api.port, "GET", "/healthz")).toMatchObject({ status: 200, body: "ok" });
      await expect.poll(() => lines.withMessage("http metrics not recorded").length).toBe(3);
      expect(lines.withMessage("http metrics not recorded")[0]).toMatchObject({ reason: "Error: injected observeHttp failure" });
    } finally {
      await api.close();
    }
  });
});
