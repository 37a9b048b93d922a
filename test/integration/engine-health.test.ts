import { afterEach, describe, expect, it } from "vitest";
import { FAULT_HEADER } from "../engine-sim/engine.js";
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
});
