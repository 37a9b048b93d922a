import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FAULT_HEADER } from "../engine-sim/engine.js";
import { apiClient } from "../support/http.js";
import { histogramCount, scrape, series, valueOf } from "../support/prometheus.js";
import { chat, chatRequest, startRig, type Rig } from "./harness.js";

// One engine: the API's bare IP (127.0.0.1) then names exactly one endpoint of the pool.
let rig: Rig;
let call: ReturnType<typeof apiClient>;
let engine: string;
beforeAll(async () => {
  rig = await startRig({ engines: 1 });
  call = apiClient(rig.sidecar.ports.http);
  engine = rig.engines[0]!.address;
});
afterAll(async () => {
  await rig.expectIdle();
  await rig.close();
});

const inFlight = () => rig.engines[0]!.stats().inFlight;

describe("API and ext_proc traffic on one engine", () => {
  it("add up in GET /v1/load/stats and in the per-engine gauges, and both end", async () => {
    const stop = new AbortController();
    const open = rig.exchange({ request: chatRequest(chat("llama", "hold", { stream: true }), { [FAULT_HEADER]: "hang" }), signal: stop.signal });
    await expect.poll(inFlight).toBe(1);
    expect(await call("POST", "/v1/load/stats", { cluster: "llama", request_id: "api-1", prompt_length: 1000, ip: "127.0.0.1" })).toMatchObject({ status: "OK" });

    const stats = await call<Array<{ endpoint: string; queued_req_num: number; prompt_length: number }>>("GET", "/v1/load/stats?cluster=llama");
    expect(stats.data).toHaveLength(1);
    const [row] = stats.data;
    expect(row?.endpoint).toBe(engine);
    expect(row?.queued_req_num).toBe(2);
    expect(row?.prompt_length).toBeGreaterThan(1000);

    const families = await scrape(rig.sidecar.ports.http);
    expect(valueOf(families, "queued_num", { model_name: "llama", engine_ip: engine })).toBe(2);
    expect(valueOf(families, "metadata_center_engine_requests", { pool: "llama", engine })).toBe(2);
    expect(valueOf(families, "metadata_center_engine_prefill_requests", { pool: "llama", engine })).toBe(2);
    expect(valueOf(families, "metadata_center_ledger_size")).toBe(2);

    stop.abort();
    await open.catch(() => undefined);
    expect(await call("DELETE", "/v1/load/stats", { request_id: "api-1" })).toMatchObject({ status: "OK" });
    await rig.expectIdle();
    const after = await scrape(rig.sidecar.ports.http);
    expect(valueOf(after, "queued_num", { model_name: "llama", engine_ip: engine })).toBe(0);
    expect(valueOf(after, "prompt_length", { model_name: "llama", engine_ip: engine })).toBe(0);
  });
});

describe("GET /metrics", () => {
  it("exposes the Go service's names and ours, with the traffic counted", async () => {
    const before = await scrape(rig.sidecar.ports.http);
    const routedBefore = valueOf(before, "metadata_center_picks_total", { pool: "llama", engine, outcome: "routed" }) ?? 0;
    const result = await rig.exchange({ request: chatRequest(chat("llama", "hello there", { stream: true })) });
    expect(result.status).toBe(200);
    const refused = await rig.exchange({ request: chatRequest(chat("unknown-model", "hi")) });
    expect(refused.immediateResponse).toBeDefined();
    await call("GET", "/v1/load/stats?cluster=llama");
    await rig.expectIdle();

    const families = await scrape(rig.sidecar.ports.http);
    for (const name of [
      "model_engine_count",
      "queued_num",
      "prompt_length",
      "http_request_status_code_total",
      "http_request_duration_us",
      "metadata_center_engine_requests",
      "metadata_center_engine_prefill_requests",
      "metadata_center_engine_prefill_tokens",
      "metadata_center_engine_tokens_held",
      "metadata_center_picks_total",
      "metadata_center_refusals_total",
      "metadata_center_time_to_first_token_seconds",
      "metadata_center_ttft_prediction_error_seconds",
      "metadata_center_request_duration_seconds",
      "metadata_center_prompt_tokens",
      "metadata_center_pick_latency_seconds",
      "metadata_center_ledger_size",
      "metadata_center_expired_total",
      // The process's own (prom-client's defaults): what an operator reads first of any Node service.
      "process_cpu_seconds_total",
      "process_resident_memory_bytes",
      "nodejs_eventloop_lag_p99_seconds",
      "nodejs_heap_size_used_bytes",
    ]) {
      expect(families.families.get(name)?.metrics.length, name).toBeGreaterThan(0);
    }
    expect(valueOf(families, "model_engine_count", { model_name: "llama" })).toBe(1);
    expect(valueOf(families, "metadata_center_picks_total", { pool: "llama", engine, outcome: "routed" })).toBe(routedBefore + 1);
    expect(valueOf(families, "metadata_center_refusals_total", { reason: "model_not_found" })).toBe(1);
    expect(histogramCount(families, "metadata_center_time_to_first_token_seconds")).toBe(histogramCount(before, "metadata_center_time_to_first_token_seconds") + 1);
    // The pick's TTFT forecast met its first token (the scorer is off by default; the model learns regardless).
    expect(histogramCount(families, "metadata_center_ttft_prediction_error_seconds")).toBe(histogramCount(before, "metadata_center_ttft_prediction_error_seconds") + 1);
    expect(histogramCount(families, "metadata_center_request_duration_seconds")).toBe(histogramCount(before, "metadata_center_request_duration_seconds") + 1);
    expect(histogramCount(families, "metadata_center_prompt_tokens")).toBe(histogramCount(before, "metadata_center_prompt_tokens") + 1);
    expect(histogramCount(families, "metadata_center_pick_latency_seconds")).toBe(histogramCount(before, "metadata_center_pick_latency_seconds") + 2);
    expect(valueOf(families, "metadata_center_engine_tokens_held", { pool: "llama", engine })).toBe(0);
    expect(valueOf(families, "metadata_center_ledger_size")).toBe(0);
    expect(valueOf(families, "metadata_center_expired_total")).toBe(0);
    expect(valueOf(families, "http_request_status_code_total", { url: "/v1/load/stats", method: "GET", status_code: "200" })).toBeGreaterThanOrEqual(2);
    expect(valueOf(families, "http_request_status_code_total", { url: "/v1/load/stats", method: "POST", status_code: "200" })).toBe(1);
    // This request, the GET above and the scrape before (recorded once its answer was sent).
    expect(histogramCount(families, "http_request_duration_us")).toBeGreaterThanOrEqual(histogramCount(before, "http_request_duration_us") + 2);
    expect(series(families, "http_request_status_code_total", { url: "/metrics" }).length).toBeGreaterThan(0);
  });

  it("learns TTFT from streamed first tokens only: a JSON body comes whole, when generation has ended", async () => {
    const before = await scrape(rig.sidecar.ports.http);
    const whole = await rig.exchange({ request: chatRequest(chat("llama", "answer in one body")) });
    expect(whole.status).toBe(200);
    expect(whole.headers["content-type"]).toContain("application/json");
    await rig.expectIdle();
    const afterWhole = await scrape(rig.sidecar.ports.http);
    // Its first byte still ended prefill (the time to it is recorded as such) but taught the model nothing.
    expect(histogramCount(afterWhole, "metadata_center_time_to_first_token_seconds")).toBe(histogramCount(before, "metadata_center_time_to_first_token_seconds") + 1);
    expect(histogramCount(afterWhole, "metadata_center_ttft_prediction_error_seconds")).toBe(histogramCount(before, "metadata_center_ttft_prediction_error_seconds"));
    await rig.exchange({ request: chatRequest(chat("llama", "stream it", { stream: true })) });
    await rig.expectIdle();
    const afterStream = await scrape(rig.sidecar.ports.http);
    expect(histogramCount(afterStream, "metadata_center_ttft_prediction_error_seconds")).toBe(histogramCount(before, "metadata_center_ttft_prediction_error_seconds") + 1);
  });

  it("labels unknown paths 'other' so scanners cannot grow the label set", async () => {
    await fetch(`http://127.0.0.1:${rig.sidecar.ports.http}/no/such/path?x=1`);
    const families = await scrape(rig.sidecar.ports.http);
    expect(valueOf(families, "http_request_status_code_total", { url: "other", method: "GET", status_code: "404" })).toBeGreaterThanOrEqual(1);
    expect(series(families, "http_request_status_code_total", { url: "/no/such/path" })).toEqual([]);
  });
});
