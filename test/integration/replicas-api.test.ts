import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { EngineStats } from "../../src/api/load-snapshot.js";
import { EnvoyExtProcClient } from "../envoy/ext-proc-client.js";
import { gate } from "../support/gate.js";
import { serve, type Running } from "../support/process.js";
import { scrape, type Scrape } from "../support/prometheus.js";
import { redisMissing, startRedis, type RedisServer } from "../support/redis.js";
import { sseEngine } from "../support/upstreams.js";
import { chat, chatRequest, ROUTE_HEADER } from "./harness.js";

// Issue #10, item 6: the v1 HTTP API's writes and the observer role go to the shared store, so an
// add on one replica and its deletes on others work, and every replica answers GET
// /v1/load/stats and the load gauges of /metrics alike. Each replica is a process of its own.

const pools = [{ name: "llama", models: ["llama"], endpoints: ["10.0.0.1:8000", "10.0.0.2:8000"] }];
/**
 * The load numbers of /metrics, read from the store at scrape time. Every other family is per
 * process by nature (what this replica served: HTTP and pick counters, latency histograms,
 * expirations it swept, whether it reaches Redis, its version and liveness).
 */
const LOAD_GAUGES = [
  "model_engine_count",
  "queued_num",
  "prompt_length",
  "metadata_center_engine_requests",
  "metadata_center_engine_prefill_requests",
  "metadata_center_engine_prefill_tokens",
  "metadata_center_engine_tokens_held",
  "metadata_center_ledger_size",
];

if (redisMissing !== undefined) it.skip(`replicas' HTTP API on Redis: ${redisMissing}`, () => undefined);

async function call(replica: Running, method: string, path: string, body?: unknown): Promise<{ status: string; data: unknown }> {
  const response = await fetch(`http://127.0.0.1:${replica.ports.http}${path}`, {
    method,
    ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { "content-type": "application/json" } }),
  });
  const answer = (await response.json()) as { status: string; data: unknown };
  expect(answer.status, `${method} ${path}`).toBe("OK");
  return answer;
}

const stats = async (replica: Running, cluster: string) => (await call(replica, "GET", `/v1/load/stats?cluster=${cluster}`)).data as EngineStats[] | null;

/** Each load gauge's series, labels and value, in a stable order. */
function loadGauges(scraped: Scrape): Record<string, Array<{ labels: Record<string, string>; value: number }>> {
  return Object.fromEntries(
    LOAD_GAUGES.map((name) => {
      const family = scraped.families.get(name);
      expect(family, name).toBeDefined();
      const series = (family?.metrics ?? []).map((sample) => ({ labels: sample.labels ?? {}, value: Number(sample.value) }));
      return [name, series.sort((a, b) => JSON.stringify(a.labels).localeCompare(JSON.stringify(b.labels)))];
    }),
  );
}

describe.skipIf(redisMissing !== undefined)("replicas sharing one Redis: the HTTP API, the observer role and /metrics", () => {
  let redis: RedisServer;
  let dir: string;
  /** Three pickers. */
  let replicas: Running[] = [];
  let observer: Running;
  let client: EnvoyExtProcClient;

  beforeAll(async () => {
    redis = await startRedis();
    dir = mkdtempSync(join(tmpdir(), "mc-replicas-api-"));
    const keyPrefix = `mc-${randomUUID()}:`;
    const file = (name: string, extra: Record<string, unknown>) => {
      const path = join(dir, `${name}.json`);
      const load = { store: "redis", redis: { url: redis.url, keyPrefix, timeoutMs: 1000 } };
      writeFileSync(path, JSON.stringify({ extproc: { port: 0 }, health: { port: 0 }, http: { port: 0 }, pools, load, ...extra }));
      return path;
    };
    const picker = file("picker", {});
    // The observer takes the engine an earlier picker wrote into the routing header (as AIGW's does).
    const watching = file("observer", { role: "observer", extproc: { port: 0, trustedHeaders: [ROUTE_HEADER] } });
    [observer, ...replicas] = await Promise.all([serve(["--config", watching]), ...[1, 2, 3].map(() => serve(["--config", picker]))]);
    client = new EnvoyExtProcClient(`127.0.0.1:${observer.ports.extproc}`);
  }, 60_000);
  afterAll(async () => {
    client?.close();
    for (const child of [observer, ...replicas]) child?.child.kill("SIGKILL");
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Every replica (the observer too) answers GET /v1/load/stats for each cluster and the load gauges alike; returns that one view. */
  async function sameEverywhere(clusters: string[]): Promise<{ stats: Record<string, EngineStats[] | null>; gauges: ReturnType<typeof loadGauges> }> {
    const views = await Promise.all(
      [...replicas, observer].map(async (replica) => ({
        stats: Object.fromEntries(await Promise.all(clusters.map(async (cluster) => [cluster, await stats(replica, cluster)] as const))),
        gauges: loadGauges(await scrape(replica.ports.http)),
      })),
    );
    for (const view of views.slice(1)) expect(view).toEqual(views[0]);
    return views[0]!;
  }
  const engine = (view: Record<string, EngineStats[] | null>, cluster: string, endpoint: string) => view[cluster]?.find((entry) => entry.endpoint === endpoint);
  const gauge = (gauges: ReturnType<typeof loadGauges>, name: string, labels: Record<string, string>) =>
    gauges[name]?.find((series) => Object.entries(labels).every(([key, value]) => series.labels[key] === value))?.value;
  /** Open reservations, as every replica counts them (each test compares with what it found, so a failed one does not fail the next). */
  const ledger = async () => gauge((await sameEverywhere([])).gauges, "metadata_center_ledger_size", {});

  it("an add on A, its prompt released on B, its end on C: every replica shows the same numbers at each step, zero at the end", async () => {
    const [a, b, c] = replicas as [Running, Running, Running];
    const id = randomUUID();
    // A cluster only the API reported (not configured anywhere), counted on the bare IP.
    const other = randomUUID();
    const clusters = ["llama", "aigw"];
    const before = await ledger();

    await call(a, "POST", "/v1/load/stats", { cluster: "llama", request_id: id, prompt_length: 120, ip: "10.0.0.1" });
    await call(a, "POST", "/v1/load/stats", { cluster: "aigw", request_id: other, prompt_length: 7, ip: "10.9.9.9" });
    let view = await sameEverywhere(clusters);
    expect(engine(view.stats, "llama", "10.0.0.1:8000")).toMatchObject({ queued_req_num: 1, prompt_length: 120, prefill_req_num: 1, tokens_held: 120 });
    expect(engine(view.stats, "llama", "10.0.0.2:8000")).toMatchObject({ queued_req_num: 0, prompt_length: 0 });
    expect(engine(view.stats, "aigw", "10.9.9.9")).toMatchObject({ ip: "10.9.9.9", port: 0, queued_req_num: 1, prompt_length: 7 });
    expect(gauge(view.gauges, "queued_num", { model_name: "llama", engine_ip: "10.0.0.1:8000" })).toBe(1);
    expect(gauge(view.gauges, "prompt_length", { model_name: "llama", engine_ip: "10.0.0.1:8000" })).toBe(120);
    expect(gauge(view.gauges, "model_engine_count", { model_name: "aigw" })).toBe(1);
    expect(gauge(view.gauges, "metadata_center_ledger_size", {})).toBe(before! + 2);

    await call(b, "DELETE", "/v1/load/prompt", { request_id: id });
    view = await sameEverywhere(clusters);
    expect(engine(view.stats, "llama", "10.0.0.1:8000")).toMatchObject({ queued_req_num: 1, prompt_length: 0, prefill_req_num: 0, tokens_held: 120 });
    expect(gauge(view.gauges, "metadata_center_engine_prefill_tokens", { pool: "llama", engine: "10.0.0.1:8000" })).toBe(0);
    expect(gauge(view.gauges, "metadata_center_engine_requests", { pool: "llama", engine: "10.0.0.1:8000" })).toBe(1);

    await call(c, "DELETE", "/v1/load/stats", { request_id: id });
    await call(b, "DELETE", "/v1/load/stats", { request_id: other });
    view = await sameEverywhere(clusters);
    for (const [cluster, endpoint] of [["llama", "10.0.0.1:8000"], ["llama", "10.0.0.2:8000"], ["aigw", "10.9.9.9"]] as const) {
      expect(engine(view.stats, cluster, endpoint), endpoint).toMatchObject({ queued_req_num: 0, prompt_length: 0, prefill_req_num: 0, tokens_held: 0 });
    }
    for (const name of LOAD_GAUGES.filter((name) => name !== "model_engine_count" && name !== "metadata_center_ledger_size")) {
      expect(view.gauges[name]?.map((series) => series.value).filter((value) => value !== 0), name).toEqual([]);
    }
    expect(gauge(view.gauges, "metadata_center_ledger_size", {})).toBe(before);
  }, 30_000);

  it("a delete on B that overtook its add on A is applied by B's retry a second later: nothing left anywhere", async () => {
    const [a, b] = replicas as [Running, Running];
    const id = randomUUID();
    const before = await ledger();
    await call(b, "DELETE", "/v1/load/stats", { request_id: id });
    await call(a, "POST", "/v1/load/stats", { cluster: "early", request_id: id, prompt_length: 50, ip: "10.0.2.1" });
    await expect.poll(ledger, { timeout: 10_000, interval: 200 }).toBe(before);
    const view = await sameEverywhere(["early"]);
    expect(engine(view.stats, "early", "10.0.2.1")).toMatchObject({ queued_req_num: 0, prompt_length: 0, tokens_held: 0 });
  }, 30_000);

  it("an exchange the observer counts is seen by every other replica, in GET /v1/load/stats and /metrics, until it ends", async () => {
    const release = gate();
    const before = await ledger();
    const exchange = client.exchange({
      request: chatRequest(chat("llama", "counted by the observer", { stream: true }), { [ROUTE_HEADER]: "10.0.0.2:8000" }),
      upstream: sseEngine(release.promise),
      timeoutMs: 30_000,
    });
    await expect.poll(async () => engine({ llama: await stats(replicas[0]!, "llama") }, "llama", "10.0.0.2:8000")?.queued_req_num, { timeout: 10_000 }).toBe(1);
    const view = await sameEverywhere(["llama"]);
    expect(engine(view.stats, "llama", "10.0.0.2:8000")).toMatchObject({ queued_req_num: 1, prefill_req_num: 1 });
    expect(engine(view.stats, "llama", "10.0.0.2:8000")?.prompt_length).toBeGreaterThan(0);
    expect(gauge(view.gauges, "queued_num", { model_name: "llama", engine_ip: "10.0.0.2:8000" })).toBe(1);
    expect(gauge(view.gauges, "metadata_center_ledger_size", {})).toBe(before! + 1);
    release.open();
    const result = await exchange;
    expect(result.status).toBe(200);
    expect(result.routedTo).toBe("10.0.0.2:8000");
    await expect.poll(ledger, { timeout: 10_000 }).toBe(before);
    const after = await sameEverywhere(["llama"]);
    expect(engine(after.stats, "llama", "10.0.0.2:8000")).toMatchObject({ queued_req_num: 0, prompt_length: 0, prefill_req_num: 0, tokens_held: 0 });
  }, 30_000);
});
