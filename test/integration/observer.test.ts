import { afterEach, describe, expect, it } from "vitest";
import { chat, chatRequest, ROUTE_HEADER, startRig, type Rig } from "./harness.js";

let rig: Rig | undefined;
afterEach(async () => {
  await rig?.expectIdle();
  await rig?.close();
  rig = undefined;
});

/** Open requests the sidecar counts on one engine. */
async function requestsOn(r: Rig, engine: string): Promise<number> {
  return (await r.sidecar.store.loads([engine])).get(engine)?.requests ?? 0;
}

describe("observer role", () => {
  it("leaves the earlier filter's route alone and counts the load on that engine", async () => {
    rig = await startRig({ engines: 2, engine: { decodeTokensPerSecond: 40 }, sidecar: { role: "observer" } });
    const r = rig;
    const b = r.engines[1]!.address;
    let firstChunk: (() => void) | undefined;
    const sawFirst = new Promise<void>((resolve) => (firstChunk = resolve));
    // The header as the picker earlier in the chain left it.
    const observed = r.exchange({
      request: chatRequest(chat("llama", "routed elsewhere", { stream: true, max_tokens: 12 }), { [ROUTE_HEADER]: b }),
      downstream: { onHeaders() {}, onData: () => firstChunk?.(), onTrailers() {}, onEnd() {}, onReset() {} },
    });
    await sawFirst;
    expect(await requestsOn(r, b)).toBe(1);
    const result = await observed;
    expect(result.status).toBe(200);
    expect(result.routedTo).toBe(b);
    expect(result.dynamicMetadata["envoy.lb"]).toBeUndefined();
  });

  it("BUFFERED (Envoy before 1.32): the earlier filter's route survives the headers reply", async () => {
    rig = await startRig({ engines: 2, sidecar: { role: "observer" } });
    const b = rig.engines[1]!.address;
    const result = await rig.exchange({
      request: chatRequest(chat("llama", "buffered"), { [ROUTE_HEADER]: b }),
      config: { requestBodyMode: "BUFFERED", responseBodyMode: "STREAMED" },
    });
    expect(result.status).toBe(200);
    expect(result.routedTo).toBe(b);
  });

  it("refuses nothing: a body it cannot read, or a request with no route, passes on uncounted", async () => {
    rig = await startRig({ engines: 1, sidecar: { role: "observer" } });
    const engine = rig.engines[0]!.address;
    const unreadable = await rig.exchange({ request: chatRequest("{not json", { [ROUTE_HEADER]: engine }) });
    expect(unreadable.immediateResponse).toBeUndefined();
    expect(unreadable.routedTo).toBe(engine);
    expect(unreadable.status).toBe(400);
    const unrouted = await rig.exchange({ request: chatRequest(chat("llama", "no route")) });
    expect(unrouted.immediateResponse).toBeUndefined();
    expect(unrouted.routedTo).toBeUndefined();
  });
});
