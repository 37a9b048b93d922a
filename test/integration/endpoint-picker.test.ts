import { afterEach, describe, expect, it } from "vitest";
import { FAULT_HEADER } from "../engine-sim/engine.js";
import { histogramCount, scrape, valueOf } from "../support/prometheus.js";
import { chat, chatRequest, errorOf, ROUTE_HEADER, startRig, type Rig } from "./harness.js";

let rig: Rig | undefined;
afterEach(async () => {
  await rig?.expectIdle();
  await rig?.close();
  rig = undefined;
});

const subsetHint = (endpoints: string[]) => ({ "envoy.lb.subset_hint": { "x-gateway-destination-endpoint-subset": endpoints } });

/** Open requests the sidecar counts on one engine. */
async function requestsOn(r: Rig, engine: string): Promise<number> {
  return (await r.sidecar.store.loads([engine])).get(engine)?.requests ?? 0;
}

describe("subset hint", () => {
  it("picks only among the pool engines the gateway allows", async () => {
    rig = await startRig({ engines: 3 });
    const allowed = rig.engines[1]!.address;
    for (let i = 0; i < 5; i++) {
      const result = await rig.exchange({ request: chatRequest(chat("llama", `hi ${i}`)), metadataContext: subsetHint([allowed, "10.255.0.1:80"]) });
      expect(result.status).toBe(200);
      expect(result.routedTo).toBe(allowed);
    }
    expect(rig.engines[1]!.stats().received).toBe(5);
  });

  it("503 when the hint is empty or names no engine of the pool; nothing reserved", async () => {
    rig = await startRig({ engines: 2 });
    for (const hint of [[], ["10.255.0.1:80"]]) {
      const result = await rig.exchange({ request: chatRequest(chat("llama", "hi")), metadataContext: subsetHint(hint) });
      expect(result.status).toBe(503);
      expect(errorOf(result)).toMatchObject({ code: "no_engine_available", type: "server_error", message: expect.stringContaining("subset hint") });
    }
    expect(rig.engines.map((engine) => engine.stats().received)).toEqual([0, 0]);
  });
});

describe("fallbacks", () => {
  it("the metadata names primary then fallbacks; the routing header stays one ip:port", async () => {
    rig = await startRig({ engines: 3, sidecar: { scheduling: { fallbacks: 2 } } });
    const result = await rig.exchange({ request: chatRequest(chat("llama", "hi")) });
    expect(result.status).toBe(200);
    const list = String(result.dynamicMetadata["envoy.lb"]?.[ROUTE_HEADER]).split(",");
    expect(list).toHaveLength(3);
    expect(new Set(list)).toEqual(new Set(rig.engines.map((engine) => engine.address)));
    expect(list[0]).toBe(result.routedTo);
    expect(result.upstreamRequest?.headers[ROUTE_HEADER]).toBe(list[0]);
  });
});

describe("served endpoint", () => {
  it("moves the load to the engine the gateway says served the request", async () => {
    rig = await startRig({ engines: 2, engine: { model: { stepBaseMs: 25 } } });
    const r = rig;
    const [a, b] = r.engines.map((engine) => engine.address) as [string, string];
    // Load b first, so the pick goes to a; then report b as the engine that served.
    const hold = new AbortController();
    const held = r.exchange({
      request: chatRequest(chat("llama", "hold b", { stream: true }), { [FAULT_HEADER]: "hang" }),
      metadataContext: subsetHint([b]),
      signal: hold.signal,
    });
    await expect.poll(() => requestsOn(r, b)).toBe(1);
    let firstChunk: (() => void) | undefined;
    const sawFirst = new Promise<void>((resolve) => (firstChunk = resolve));
    const moved = r.exchange({
      request: chatRequest(chat("llama", "served elsewhere", { stream: true, max_tokens: 12 })),
      metadataContext: { "envoy.lb": { "x-gateway-destination-endpoint-served": b } },
      downstream: { onHeaders() {}, onData: () => firstChunk?.(), onTrailers() {}, onEnd() {}, onReset() {} },
    });
    await sawFirst;
    expect(await requestsOn(r, a)).toBe(0);
    expect(await requestsOn(r, b)).toBe(2);
    const result = await moved;
    expect(result.status).toBe(200);
    expect(result.routedTo).toBe(a);
    expect(await requestsOn(r, b)).toBe(1);
    hold.abort();
    await held;
  });
});

describe("shedding", () => {
  it("429 in OpenAI's error shape when every engine is at maxRequestsPerEngine; nothing reserved", async () => {
    rig = await startRig({ engines: 2, sidecar: { scheduling: { maxRequestsPerEngine: 1 } } });
    const r = rig;
    const hold = new AbortController();
    const held = [0, 1].map((i) =>
      r.exchange({ request: chatRequest(chat("llama", `hold ${i}`, { stream: true }), { [FAULT_HEADER]: "hang" }), signal: hold.signal }),
    );
    await expect.poll(() => r.engines.map((engine) => engine.stats().inFlight)).toEqual([1, 1]);
    const shed = await r.exchange({ request: chatRequest(chat("llama", "one too many")) });
    expect(shed.status).toBe(429);
    expect(errorOf(shed)).toMatchObject({ code: "rate_limit_exceeded", message: expect.stringContaining("limit of 1") });
    expect(await r.sidecar.store.size()).toBe(2);
    hold.abort();
    await Promise.all(held);
    await r.expectIdle();
    expect((await r.exchange({ request: chatRequest(chat("llama", "room again")) })).status).toBe(200);
  });

  it("with scheduling.queue, holds the request while every engine is full and routes it to the one that frees; a held client that leaves reserves nothing", async () => {
    rig = await startRig({ engines: 2, sidecar: { scheduling: { maxRequestsPerEngine: 1, queue: { maxRequests: 4 } } } });
    const r = rig;
    const holders = [0, 1].map(() => new AbortController());
    const held = holders.map((hold, i) =>
      r.exchange({ request: chatRequest(chat("llama", `hold ${i}`, { stream: true }), { [FAULT_HEADER]: "hang" }), signal: hold.signal }).catch(() => undefined),
    );
    await expect.poll(() => r.engines.map((engine) => engine.stats().inFlight)).toEqual([1, 1]);
    const leaving = new AbortController();
    const gone = r.exchange({ request: chatRequest(chat("llama", "gives up")), signal: leaving.signal }).catch(() => undefined);
    const waiting = r.exchange({ request: chatRequest(chat("llama", "waits its turn")) });
    const queued = async () => valueOf(await scrape(r.sidecar.ports.http), "metadata_center_queue_requests", { pool: "llama" });
    await expect.poll(queued).toBe(2);
    leaving.abort();
    await gone;
    await expect.poll(queued).toBe(1);
    expect(await r.sidecar.store.size()).toBe(2);
    holders[1]?.abort();
    const routed = await waiting;
    expect(routed.status).toBe(200);
    expect(r.engines.map((engine) => engine.address)).toContain(routed.routedTo);
    // Only the other hanging request is still open.
    await expect.poll(() => r.sidecar.store.size()).toBe(1);
    holders[0]?.abort();
    await Promise.all(held);
    expect(await queued()).toBe(0);
  });

  it("with maxPrefillRequestsPerEngine, holds a request while the engine's prefill is full and routes it at that request's first token, not its end", async () => {
    // Steps of 100 ms: the first request's first token comes after one step, its last after 30.
    rig = await startRig({
      engines: 1,
      engine: { model: { stepBaseMs: 100 } },
      // No retries on a timer: only the first token's wake can let the held request go before the first one ends.
      sidecar: { scheduling: { maxPrefillRequestsPerEngine: 1, queue: { maxRequests: 4, retryMs: 60_000 } } },
    });
    const r = rig;
    let firstEnded = false;
    const first = r.exchange({ request: chatRequest(chat("llama", "a long answer", { stream: true, max_tokens: 30 })) }).then((result) => {
      firstEnded = true;
      return result;
    });
    await expect.poll(() => r.sidecar.store.size()).toBe(1);
    const second = r.exchange({ request: chatRequest(chat("llama", "a short one", { max_tokens: 1 })) });
    const routed = await second;
    expect(routed.status).toBe(200);
    expect(firstEnded).toBe(false);
    // It was held: the queue's wait histogram has its one observation.
    expect(histogramCount(await scrape(r.sidecar.ports.http), "metadata_center_queue_wait_seconds")).toBe(1);
    expect((await first).status).toBe(200);
  });

  it("without a queue, a pool whose every engine is at maxPrefillRequestsPerEngine answers 429 naming that limit", async () => {
    rig = await startRig({ engines: 1, sidecar: { scheduling: { maxPrefillRequestsPerEngine: 1 } } });
    const r = rig;
    const hold = new AbortController();
    const held = r.exchange({ request: chatRequest(chat("llama", "stays in prefill", { stream: true }), { [FAULT_HEADER]: "hang" }), signal: hold.signal }).catch(() => undefined);
    await expect.poll(() => r.engines[0]!.stats().inFlight).toBe(1);
    const refused = await r.exchange({ request: chatRequest(chat("llama", "no room")) });
    expect(refused.immediateResponse?.status).toBe(429);
    expect(errorOf(refused).message).toContain("at its limit of 1 requests in prefill");
    hold.abort();
    await held;
  });
});
