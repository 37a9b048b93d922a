import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiClient } from "../support/http.js";
import { scrape, valueOf } from "../support/prometheus.js";
import { idle, startTestSidecar, totalLoad } from "../support/sidecar.js";

type Sidecar = Awaited<ReturnType<typeof startTestSidecar>>;
interface EngineRow {
  ip: string;
  port: number;
  endpoint: string;
  queued_req_num: number;
  prompt_length: number;
}

let sidecar: Sidecar;
let call: ReturnType<typeof apiClient>;
beforeAll(async () => {
  sidecar = await startTestSidecar([
    { name: "alpha", models: ["a"], endpoints: ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.2:8001"] },
    { name: "beta", models: ["b"], endpoints: ["10.0.0.1:9000"] },
  ]);
  call = apiClient(sidecar.ports.http);
});
afterAll(async () => {
  expect(await totalLoad(sidecar)).toEqual(idle);
  await sidecar.stop(0);
});

let sequence = 0;
const newId = (): string => `req-${(sequence += 1)}`;
const add = (body: Record<string, unknown>) => call("POST", "/v1/load/stats", body);
const endStats = (request_id: string) => call("DELETE", "/v1/load/stats", { request_id });
const endPrompt = (request_id: string) => call("DELETE", "/v1/load/prompt", { request_id });
const engine = async (cluster: string, key: string): Promise<EngineRow | undefined> =>
  (await call<EngineRow[] | null>("GET", `/v1/load/stats?cluster=${cluster}`)).data?.find((row) => row.endpoint === key);

describe("POST /v1/load/stats", () => {
  it("adds one request with its prompt length to the pool's endpoint with that IP, and DELETE ends it", async () => {
    const id = newId();
    const answer = await add({ cluster: "alpha", request_id: id, prompt_length: 120, ip: "10.0.0.1", timestamp: 1 });
    expect(answer).toMatchObject({ httpStatus: 200, status: "OK", error: null, data: null });
    expect(await engine("alpha", "10.0.0.1:8000")).toMatchObject({ ip: "10.0.0.1", port: 8000, queued_req_num: 1, prompt_length: 120 });
    expect(await endStats(id)).toMatchObject({ httpStatus: 200, status: "OK" });
    expect(await engine("alpha", "10.0.0.1:8000")).toMatchObject({ queued_req_num: 0, prompt_length: 0 });
  });

  it("keys an IP with several endpoints in the pool (or none) by the bare IP, listed at zero once its requests ended", async () => {
    const [shared, unknown] = [newId(), newId()];
    await add({ cluster: "alpha", request_id: shared, prompt_length: 5, ip: "10.0.0.2" });
    await add({ cluster: "alpha", request_id: unknown, ip: "10.9.9.9" });
    expect(await engine("alpha", "10.0.0.2")).toMatchObject({ ip: "10.0.0.2", port: 0, queued_req_num: 1, prompt_length: 5 });
    expect(await engine("alpha", "10.9.9.9")).toMatchObject({ queued_req_num: 1, prompt_length: 0 });
    expect(await engine("alpha", "10.0.0.2:8000")).toMatchObject({ queued_req_num: 0 });
    await endStats(shared);
    await endStats(unknown);
    // Go's GC drops an engine only once it has had no update for the expiry time (test/integration/expiry.test.ts).
    expect(await engine("alpha", "10.0.0.2")).toMatchObject({ queued_req_num: 0, prompt_length: 0 });
    expect(await engine("alpha", "10.9.9.9")).toMatchObject({ queued_req_num: 0, prompt_length: 0 });
  });

  it("ignores a duplicate request_id: the original stays counted once", async () => {
    const id = newId();
    await add({ cluster: "alpha", request_id: id, prompt_length: 10, ip: "10.0.0.1" });
    const again = await add({ cluster: "alpha", request_id: id, prompt_length: 999, ip: "10.0.0.1" });
    expect(again).toMatchObject({ httpStatus: 200, status: "OK" });
    expect(await engine("alpha", "10.0.0.1:8000")).toMatchObject({ queued_req_num: 1, prompt_length: 10 });
    await endStats(id);
    expect(await engine("alpha", "10.0.0.1:8000")).toMatchObject({ queued_req_num: 0, prompt_length: 0 });
  });

  it("keeps clusters apart, even on the same IP", async () => {
    const [a, b] = [newId(), newId()];
    await add({ cluster: "alpha", request_id: a, prompt_length: 1, ip: "10.0.0.1" });
    await add({ cluster: "beta", request_id: b, prompt_length: 2, ip: "10.0.0.1" });
    expect(await engine("alpha", "10.0.0.1:8000")).toMatchObject({ queued_req_num: 1, prompt_length: 1 });
    expect(await engine("beta", "10.0.0.1:9000")).toMatchObject({ queued_req_num: 1, prompt_length: 2 });
    expect(await engine("alpha", "10.0.0.1:9000")).toBeUndefined();
    await endStats(a);
    await endStats(b);
  });

  it("counts the same IP under two clusters as two counters, in GET /v1/load/stats, /debug/pools and /metrics", async () => {
    const ids = [newId(), newId(), newId()];
    await add({ cluster: "delta", request_id: ids[0], prompt_length: 3, ip: "10.5.5.5" });
    await add({ cluster: "epsilon", request_id: ids[1], prompt_length: 4, ip: "10.5.5.5" });
    await add({ cluster: "epsilon", request_id: ids[2], prompt_length: 5, ip: "10.5.5.5" });
    expect(await engine("delta", "10.5.5.5")).toMatchObject({ queued_req_num: 1, prompt_length: 3 });
    expect(await engine("epsilon", "10.5.5.5")).toMatchObject({ queued_req_num: 2, prompt_length: 9 });
    const view = await call<{ pools: Array<{ name: string; engines: Array<Record<string, number | string>> }> }>("GET", "/debug/pools");
    expect(view.data.pools.find((pool) => pool.name === "delta")?.engines).toMatchObject([{ engine: "10.5.5.5", requests: 1, prefill_tokens: 3 }]);
    expect(view.data.pools.find((pool) => pool.name === "epsilon")?.engines).toMatchObject([{ engine: "10.5.5.5", requests: 2, prefill_tokens: 9 }]);
    const scraped = await scrape(sidecar.ports.http);
    expect(valueOf(scraped, "queued_num", { model_name: "delta", engine_ip: "10.5.5.5" })).toBe(1);
    expect(valueOf(scraped, "queued_num", { model_name: "epsilon", engine_ip: "10.5.5.5" })).toBe(2);
    expect(valueOf(scraped, "prompt_length", { model_name: "epsilon", engine_ip: "10.5.5.5" })).toBe(9);
    for (const id of ids) await endStats(id);
    expect(await engine("epsilon", "10.5.5.5")).toMatchObject({ queued_req_num: 0, prompt_length: 0 });
  });

  it("echoes the TraceId header", async () => {
    const id = newId();
    const answer = await call("POST", "/v1/load/stats", { cluster: "alpha", request_id: id, ip: "10.0.0.1" }, { TraceId: "trace-abc" });
    expect(answer.trace_id).toBe("trace-abc");
    expect((await call("DELETE", "/v1/load/stats", { request_id: id }, { TraceId: "trace-def" })).trace_id).toBe("trace-def");
  });
});

describe("DELETE /v1/load/prompt", () => {
  it("releases the prompt length and keeps the request in flight; a second time changes nothing", async () => {
    const id = newId();
    await add({ cluster: "alpha", request_id: id, prompt_length: 300, ip: "10.0.0.1" });
    expect(await endPrompt(id)).toMatchObject({ httpStatus: 200, status: "OK" });
    expect(await engine("alpha", "10.0.0.1:8000")).toMatchObject({ queued_req_num: 1, prompt_length: 0 });
    expect(await endPrompt(id)).toMatchObject({ httpStatus: 200, status: "OK" });
    expect(await engine("alpha", "10.0.0.1:8000")).toMatchObject({ queued_req_num: 1, prompt_length: 0 });
    await endStats(id);
    expect(await engine("alpha", "10.0.0.1:8000")).toMatchObject({ queued_req_num: 0, prompt_length: 0 });
  });
});

// DeleteRequest / DeletePromptLength in the Go service's pkg/meta/load/load_stats.go: every delete
// is answered 200 at once; one whose id is not open is retried once, 1 s later.
describe("deletes that come before their add", () => {
  it("DELETE /v1/load/stats first: answered at once; the add, when it comes, counts nothing", async () => {
    const id = newId();
    expect(await endStats(id)).toMatchObject({ httpStatus: 200, status: "OK", error: null });
    expect(await add({ cluster: "alpha", request_id: id, prompt_length: 50, ip: "10.0.0.1" })).toMatchObject({ status: "OK" });
    expect(await engine("alpha", "10.0.0.1:8000")).toMatchObject({ queued_req_num: 0, prompt_length: 0 });
    expect(await sidecar.store.size()).toBe(0);
  });

  it("DELETE /v1/load/prompt first: the add, when it comes, stays in flight without its prompt", async () => {
    const id = newId();
    expect(await endPrompt(id)).toMatchObject({ httpStatus: 200, status: "OK" });
    await add({ cluster: "alpha", request_id: id, prompt_length: 50, ip: "10.0.0.1" });
    expect(await engine("alpha", "10.0.0.1:8000")).toMatchObject({ queued_req_num: 1, prompt_length: 0 });
    await endStats(id);
  });

  it("answers 200 at once, never 404 and never held, for an id never added and for a second delete", async () => {
    const started = performance.now();
    expect(await endStats(newId())).toMatchObject({ httpStatus: 200, status: "OK", error: null });
    expect(await endPrompt(newId())).toMatchObject({ httpStatus: 200, status: "OK", error: null });
    const id = newId();
    await add({ cluster: "alpha", request_id: id, ip: "10.0.0.1" });
    expect(await endStats(id)).toMatchObject({ httpStatus: 200 });
    expect(await endStats(id)).toMatchObject({ httpStatus: 200, status: "OK", error: null });
    expect(await endPrompt(id)).toMatchObject({ httpStatus: 200, status: "OK", error: null });
    // The retry waits 1 s; the answers did not.
    expect(performance.now() - started).toBeLessThan(900);
    expect(await engine("alpha", "10.0.0.1:8000")).toMatchObject({ queued_req_num: 0 });
  });
});

describe("invalid input: 400 / 40001400 naming the field", () => {
  const valid = { cluster: "alpha", request_id: "bad-input", prompt_length: 1, ip: "10.0.0.1" };
  it.each([
    ["an invalid IP", { ...valid, ip: "10.0.0.256" }, "ip"],
    ["an IPv6 address", { ...valid, ip: "::1" }, "ip"],
    ["a negative prompt length", { ...valid, prompt_length: -1 }, "prompt_length"],
    ["a fractional prompt length", { ...valid, prompt_length: 1.5 }, "prompt_length"],
    ["a missing cluster", { request_id: "x", ip: "10.0.0.1" }, "cluster"],
    ["a missing request_id", { cluster: "alpha", ip: "10.0.0.1" }, "request_id"],
    ["a missing ip", { cluster: "alpha", request_id: "x" }, "ip"],
    ["a number as request_id", { ...valid, request_id: 7 }, "request_id"],
    ["a string as prompt_length", { ...valid, prompt_length: "12" }, "prompt_length"],
  ])("refuses %s", async (_, body, field) => {
    const answer = await add(body);
    expect(answer).toMatchObject({ httpStatus: 400, status: "ERROR", error: { code: 40001400 } });
    expect(answer.error?.message).toContain(field);
    expect(await sidecar.store.size()).toBe(0);
  });

  it("refuses malformed JSON, an empty body and a body over 64 KiB", async () => {
    expect(await call("POST", "/v1/load/stats", "{not json")).toMatchObject({ httpStatus: 400, error: { code: 40001400, message: expect.stringContaining("JSON") } });
    expect(await call("DELETE", "/v1/load/stats", "")).toMatchObject({ httpStatus: 400, error: { code: 40001400 } });
    const huge = JSON.stringify({ ...valid, padding: "x".repeat(70 * 1024) });
    expect(await call("POST", "/v1/load/stats", huge)).toMatchObject({ httpStatus: 400, error: { code: 40001400, message: expect.stringContaining("larger") } });
    expect(await sidecar.store.size()).toBe(0);
  });

  it("refuses a delete without request_id", async () => {
    const answer = await call("DELETE", "/v1/load/prompt", { id: "x" });
    expect(answer).toMatchObject({ httpStatus: 400, error: { code: 40001400 } });
    expect(answer.error?.message).toContain("request_id");
  });
});

describe("POST /log/level", () => {
  it("changes the level at run time and refuses unknown levels", async () => {
    const sidecarWithLog = await startTestSidecar([{ name: "p", models: ["m"], endpoints: ["10.0.0.1:1"] }], { log: { level: "silent" } });
    try {
      const post = apiClient(sidecarWithLog.ports.http);
      expect(await post("POST", "/log/level", { LevelParam: "WARN" })).toMatchObject({ httpStatus: 200, status: "OK" });
      expect(sidecarWithLog.log.level).toBe("warn");
      expect(await post("POST", "/log/level", { LevelParam: "ERROR" })).toMatchObject({ httpStatus: 200 });
      expect(sidecarWithLog.log.level).toBe("error");
      const bad = await post("POST", "/log/level", { LevelParam: "LOUD" });
      expect(bad).toMatchObject({ httpStatus: 400, error: { code: 40001400 } });
      expect(bad.error?.message).toContain("LevelParam");
      expect(sidecarWithLog.log.level).toBe("error");
    } finally {
      await sidecarWithLog.stop(0);
    }
  });
});

describe("GET /debug/pools", () => {
  it("shows every configured pool, clusters only the API reported, their engines and load", async () => {
    const [a, b] = [newId(), newId()];
    await add({ cluster: "alpha", request_id: a, prompt_length: 9, ip: "10.0.0.1" });
    await add({ cluster: "gamma", request_id: b, prompt_length: 4, ip: "10.7.7.7" });
    await endPrompt(b);
    const view = await call<{ ledger: number; pools: Array<{ name: string; models: string[]; configured: boolean; engines: Array<Record<string, number | string>> }> }>(
      "GET",
      "/debug/pools",
      undefined,
      { TraceId: "debug-1" },
    );
    expect(view).toMatchObject({ httpStatus: 200, status: "OK", trace_id: "debug-1" });
    expect(view.data.ledger).toBe(2);
    const byName = new Map(view.data.pools.map((pool) => [pool.name, pool]));
    // Clusters other tests reported stay listed until they expire.
    expect([...byName.keys()]).toEqual(expect.arrayContaining(["alpha", "beta", "gamma"]));
    expect(byName.get("alpha")).toMatchObject({ models: ["a"], configured: true });
    // Configured endpoints first, then engines only the API reported (other tests' included).
    expect(byName.get("alpha")?.engines.map((engine) => engine["engine"]).slice(0, 3)).toEqual(["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.2:8001"]);
    expect(byName.get("alpha")?.engines[0]).toMatchObject({ requests: 1, prefill_requests: 1, prefill_tokens: 9, tokens_held: 9 });
    expect(byName.get("gamma")).toMatchObject({
      models: [],
      configured: false,
      engines: [{ engine: "10.7.7.7", requests: 1, prefill_requests: 0, prefill_tokens: 0, tokens_held: 4 }],
    });
    await endStats(a);
    await endStats(b);
    const after = await call<{ ledger: number; pools: Array<{ name: string; engines: Array<Record<string, number | string>> }> }>("GET", "/debug/pools");
    expect(after.data.ledger).toBe(0);
    // An API-only cluster stays listed, its engine at zero, until the expiry drops it.
    expect(after.data.pools.find((pool) => pool.name === "gamma")?.engines).toMatchObject([{ engine: "10.7.7.7", requests: 0, tokens_held: 0 }]);
  });
});
