import { afterEach, describe, expect, it } from "vitest";
import { FAULT_HEADER, startEngineSim } from "../engine-sim/engine.js";
import { LogCapture } from "../support/sidecar.js";
import type { EngineSim } from "../engine-sim/engine.js";
import { closedPort } from "../support/ports.js";
import { chat, chatRequest, startRig, type Rig } from "./harness.js";

let rig: Rig | undefined;
afterEach(async () => {
  await rig?.expectIdle();
  await rig?.close();
  rig = undefined;
});

const only = (engine: string) => ({ "envoy.lb.subset_hint": { "x-gateway-destination-endpoint-subset": [engine] } });


describe("engine health", () => {
  it("an engine answering 5xx N times in a row is left out of picking", async () => {
    rig = await startRig({ engines: 2, sidecar: { scheduling: { ejectAfterErrors: 3, ejectSeconds: 60 } } });
    const [a, b] = rig.engines.map((engine) => engine.address) as [string, string];
    for (let i = 0; i < 3; i++) {
      const failed = await rig.exchange({ request: chatRequest(chat("llama", `fail ${i}`), { [FAULT_HEADER]: "status=503" }), metadataContext: only(a) });
      expect(failed.status).toBe(503);
    }
    for (let i = 0; i < 8; i++) {
      const result = await rig.exchange({ request: chatRequest(chat("llama", `after ${i}`)) });
      expect(result.status).toBe(200);
      expect(result.routedTo).toBe(b);
    }
  });

  it("4xx answers do not count against an engine", async () => {
    rig = await startRig({ engines: 2, sidecar: { scheduling: { ejectAfterErrors: 2, ejectSeconds: 60 } } });
    const a = rig.engines[0]!.address;
    for (let i = 0; i < 4; i++) {
      await rig.exchange({ request: chatRequest(chat("llama", `bad ${i}`), { [FAULT_HEADER]: "status=400" }), metadataContext: only(a) });
    }
    const routed = new Set<string | undefined>();
    for (let i = 0; i < 12; i++) routed.add((await rig.exchange({ request: chatRequest(chat("llama", `ok ${i}`)) })).routedTo);
    expect(routed.has(a)).toBe(true);
  });

  it("an engine a config reload adds warms up: while cold, idle warm engines are preferred", async () => {
    rig = await startRig({ engines: 2, pools: ([a]) => [{ name: "llama", models: ["llama"], endpoints: [a!] }], sidecar: { scheduling: { slowStartSeconds: 1000 } } });
    const [a, b] = rig.engines.map((engine) => engine.address) as [string, string];
    rig.sidecar.reload({ ...rig.sidecar.config, pools: [{ name: "llama", models: ["llama"], endpoints: [a, b], dns: undefined, tokenizer: "o200k" }] });
    for (let i = 0; i < 10; i++) expect((await rig.exchange({ request: chatRequest(chat("llama", `warm ${i}`)) })).routedTo).toBe(a);
    // With slow start off, the engine counts as warm at once: idle picks spread over both.
    rig.sidecar.reload({ ...rig.sidecar.config, scheduling: { ...rig.sidecar.config.scheduling, slowStartSeconds: 0 }, pools: [{ name: "llama", models: ["llama"], endpoints: [a, b], dns: undefined, tokenizer: "o200k" }] });
    const routed = new Set<string | undefined>();
    for (let i = 0; i < 20; i++) routed.add((await rig.exchange({ request: chatRequest(chat("llama", `spread ${i}`)) })).routedTo);
    expect(routed).toEqual(new Set([a, b]));
  });

  it("an unreachable engine (no response phase reaches the sidecar) is ejected, then let back in after the backoff", async () => {
    const dead = `127.0.0.1:${await closedPort()}`;
    rig = await startRig({
      engines: 1,
      pools: ([live]) => [{ name: "llama", models: ["llama"], endpoints: [live!, dead] }],
      sidecar: { scheduling: { ejectAfterErrors: 2, ejectSeconds: 0.4, slowStartSeconds: 0 } },
    });
    for (let i = 0; i < 2; i++) {
      const lost = await rig.exchange({ request: chatRequest(chat("llama", `lost ${i}`)), metadataContext: only(dead) });
      expect(lost.localReply?.status).toBe(503);
    }
    for (let i = 0; i < 6; i++) expect((await rig.exchange({ request: chatRequest(chat("llama", `live ${i}`)) })).routedTo).not.toBe(dead);
    await new Promise((resolve) => setTimeout(resolve, 450));
    const back = new Set<string | undefined>();
    for (let i = 0; i < 20 && !back.has(dead); i++) back.add((await rig.exchange({ request: chatRequest(chat("llama", `again ${i}`)) })).routedTo);
    expect(back.has(dead)).toBe(true);
  });

  it("200 client resets, all on one engine before its response, eject nothing: the engine answers its probe", async () => {
    const capture = new LogCapture();
    rig = await startRig({ engines: 2, capture, sidecar: { scheduling: { ejectAfterErrors: 3, ejectSeconds: 60 } } });
    const [a, b] = rig.engines.map((engine) => engine.address) as [string, string];
    const r = rig;
    for (let wave = 0; wave < 4; wave++) {
      const resets = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          r.exchange({
            request: chatRequest(chat("llama", `gave up ${wave}.${i}`, { stream: true }), { [FAULT_HEADER]: "hang" }),
            metadataContext: only(a),
            // The client gives up once the request is on its way to the engine, before any response.
            reset: (at) => at.at === "routed",
          }),
        ),
      );
      expect(resets.every((result) => result.reset?.by === "client" && result.routedTo === a)).toBe(true);
    }
    await rig.expectIdle();
    expect(capture.withMessage("engine ejected after consecutive errors")).toEqual([]);
    // Both engines still take picks.
    const routed = new Set<string | undefined>();
    for (let i = 0; i < 20 && routed.size < 2; i++) routed.add((await rig.exchange({ request: chatRequest(chat("llama", `after ${i}`)) })).routedTo);
    expect(routed).toEqual(new Set([a, b]));
  });

  it("an engine that goes down is ejected after the configured failures, and comes back warming up (slow start)", async () => {
    const capture = new LogCapture();
    rig = await startRig({ engines: 2, capture, sidecar: { scheduling: { ejectAfterErrors: 3, ejectSeconds: 0.5, slowStartSeconds: 600 } } });
    const [live, flaky] = rig.engines as [EngineSim, EngineSim];
    const port = Number(flaky.address.split(":")[1]);
    await flaky.close();
    for (let i = 0; i < 2; i++) {
      expect((await rig.exchange({ request: chatRequest(chat("llama", `lost ${i}`)), metadataContext: only(flaky.address) })).localReply?.status).toBe(503);
    }
    expect(capture.withMessage("engine ejected after consecutive errors")).toEqual([]);
    expect((await rig.exchange({ request: chatRequest(chat("llama", "lost 2")), metadataContext: only(flaky.address) })).localReply?.status).toBe(503);
    await expect.poll(() => capture.withMessage("engine ejected after consecutive errors")).toEqual([expect.objectContaining({ engine: flaky.address, seconds: 0.5 })]);
    for (let i = 0; i < 5; i++) expect((await rig.exchange({ request: chatRequest(chat("llama", `ejected ${i}`)) })).routedTo).toBe(live.address);
    // Back on the same address; after the backoff it is picked again, but cold: an idle warm engine wins while both are idle.
    const restarted = await startEngineSim({ port });
    rig.engines[1] = restarted;
    await new Promise((resolve) => setTimeout(resolve, 600));
    for (let i = 0; i < 5; i++) expect((await rig.exchange({ request: chatRequest(chat("llama", `cold ${i}`)) })).routedTo).toBe(live.address);
    const stop = new AbortController();
    const busy = Array.from({ length: 4 }, (_, i) =>
      rig!.exchange({ request: chatRequest(chat("llama", `busy ${i}`, { stream: true }), { [FAULT_HEADER]: "hang" }), metadataContext: only(live.address), signal: stop.signal }),
    );
    await expect.poll(() => live.stats().inFlight).toBe(4);
    expect((await rig.exchange({ request: chatRequest(chat("llama", "back")) })).routedTo).toBe(restarted.address);
    stop.abort();
    await Promise.all(busy);
  });
});
