import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FAULT_HEADER } from "../engine-sim/engine.js";
import { scrape, valueOf } from "../support/prometheus.js";
import { chat, chatRequest, ROUTE_HEADER, startRig, type Rig } from "./harness.js";

// role: observer — an earlier picker chose the engine; the sidecar only counts the load.
let rig: Rig;
beforeAll(async () => {
  // The earlier picker here is one that writes the routing header (AIGW's does), so the config trusts it.
  rig = await startRig({ engines: 2, sidecar: { role: "observer", extproc: { port: 0, trustedHeaders: ["x-gateway-destination-endpoint"] } } });
});
afterAll(async () => {
  await rig.expectIdle();
  await rig.close();
});

const addresses = () => rig.engines.map((engine) => engine.address);
const picks = async (engine: string) =>
  valueOf(await scrape(rig.sidecar.ports.http), "metadata_center_picks_total", { pool: "llama", engine, outcome: "routed" }) ?? 0;

describe("observer role", () => {
  it("tracks the whole lifecycle on the engine named by the routing header, which it leaves unchanged", async () => {
    // The second engine: a picker would likely choose the first (both idle), so this shows the header is obeyed.
    const chosen = addresses()[1]!;
    const stop = new AbortController();
    const open = rig.exchange({
      request: chatRequest(chat("llama", "hold on", { stream: true }), { [ROUTE_HEADER]: chosen, [FAULT_HEADER]: "hang" }),
      signal: stop.signal,
    });
    await expect.poll(() => rig.engines[1]!.stats().inFlight).toBe(1);
    const loads = await rig.sidecar.store.loads([]);
    expect(loads.get(chosen)).toMatchObject({ requests: 1, prefillRequests: 1 });
    expect(loads.get(addresses()[0]!)?.requests ?? 0).toBe(0);
    stop.abort();
    await open.catch(() => undefined);
    await rig.expectIdle();

    const done = await rig.exchange({ request: chatRequest(chat("llama", "hello", { stream: true }), { [ROUTE_HEADER]: chosen }) });
    expect(done.status).toBe(200);
    expect(done.routedTo).toBe(chosen);
    expect(done.upstreamRequest?.headers[ROUTE_HEADER]).toBe(chosen);
    expect(done.dynamicMetadata["envoy.lb"]).toBeUndefined();
    expect(await picks(chosen)).toBe(2);
    await rig.expectIdle();
  });

  it("reads the engine from envoy.lb metadata when there is no header", async () => {
    const chosen = addresses()[0]!;
    const before = await picks(chosen);
    // No header: the stand-in's ORIGINAL_DST has nothing to route by and answers itself; the
    // reservation is still taken, then released when the stream ends without a response.
    const result = await rig.exchange({
      request: chatRequest(chat("llama", "hi")),
      metadataContext: { "envoy.lb": { [ROUTE_HEADER]: chosen } },
    });
    expect(result.immediateResponse).toBeUndefined();
    expect(await picks(chosen)).toBe(before + 1);
    await rig.expectIdle();
  });

  it("counts nothing and changes nothing when no engine is named, or the name is not a literal ip:port", async () => {
    const total = async () => (await picks(addresses()[0]!)) + (await picks(addresses()[1]!));
    const before = await total();
    for (const headers of [{}, { [ROUTE_HEADER]: "engine.example:8000" }] as Array<Record<string, string>>) {
      const result = await rig.exchange({ request: chatRequest(chat("llama", "hi"), headers) });
      expect(result.immediateResponse).toBeUndefined();
    }
    expect(await total()).toBe(before);
    expect(await rig.sidecar.store.size()).toBe(0);
  });
});
