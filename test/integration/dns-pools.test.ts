import { Resolver } from "node:dns/promises";
import { afterEach, describe, expect, it } from "vitest";
import { resolveEngines } from "../../src/pools/dns.js";
import { startDnsServer, type DnsServer } from "../support/dns-server.js";
import { chat, chatRequest, startRig, type Rig } from "./harness.js";

let rig: Rig | undefined;
let dns: DnsServer | undefined;
afterEach(async () => {
  await rig?.expectIdle();
  await rig?.close();
  await dns?.stop();
  rig = undefined;
  dns = undefined;
});

/** The engines the sidecar lists for a pool on its HTTP load API. */
async function poolEngines(r: Rig, pool: string): Promise<string[]> {
  const response = await fetch(`http://127.0.0.1:${r.sidecar.ports.http}/v1/load/stats?cluster=${pool}`);
  const body = (await response.json()) as { data: Array<{ endpoint: string }> | null };
  return (body.data ?? []).map((engine) => engine.endpoint).sort();
}

describe("DNS pools", () => {
  it("resolves A and AAAA records into ip:port engines, IPv6 bracketed", async () => {
    dns = await startDnsServer(["127.0.0.5 engines.test", "127.0.0.4 engines.test", "fd00::7 engines.test"]);
    const resolver = new Resolver();
    resolver.setServers([dns.address]);
    expect(await resolveEngines({ name: "engines.test", port: 8000, intervalSeconds: 1 }, resolver)).toEqual([
      "127.0.0.4:8000",
      "127.0.0.5:8000",
      "[fd00::7]:8000",
    ]);
    expect(await resolveEngines({ name: "nowhere.test", port: 8000, intervalSeconds: 1 }, resolver)).toBeUndefined();
  });

  it("fills the pool before serving, follows record changes, and keeps the last engines while DNS is down", async () => {
    const server = await startDnsServer(["127.0.0.1 engines.test"]);
    dns = server;
    rig = await startRig({
      engines: 1,
      pools: ([engine]) => [
        { name: "llama", models: ["llama"], dns: { name: "engines.test", port: Number(engine!.split(":")[1]), intervalSeconds: 0.05, servers: [server.address] } },
      ],
    });
    const r = rig;
    const engine = r.engines[0]!.address;
    const first = await r.exchange({ request: chatRequest(chat("llama", "found by name")) });
    expect(first.status).toBe(200);
    expect(first.routedTo).toBe(engine);

    const port = engine.split(":")[1];
    await server.setRecords(["127.0.0.1 engines.test", "127.0.0.9 engines.test"]);
    await expect.poll(() => poolEngines(r, "llama")).toEqual([engine, `127.0.0.9:${port}`]);

    await server.stop();
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await poolEngines(r, "llama")).toEqual([engine, `127.0.0.9:${port}`]);
  });
});
