import { randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { EnvoyExtProcClient, type ExchangeResult } from "../envoy/ext-proc-client.js";
import { gate } from "../support/gate.js";
import { serve, type Running } from "../support/process.js";
import { redisMissing, startRedis, type RedisServer } from "../support/redis.js";
import { idle, LogCapture, startTestSidecar, totalLoad } from "../support/sidecar.js";
import { sseEngine } from "../support/upstreams.js";
import { chat, chatRequest } from "./harness.js";
import { tempFolder } from "../support/temp.js";

const ENGINES = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"];
const pools = [{ name: "llama", models: ["llama"], endpoints: ENGINES }];
const LEASE_SECONDS = 2;

type Sidecar = Awaited<ReturnType<typeof startTestSidecar>>;

if (redisMissing !== undefined) it.skip(`replicas on Redis: ${redisMissing}`, () => undefined);

/** The per-engine open requests one replica reports for the pool. */
async function requestsSeen(sidecar: Sidecar): Promise<number[]> {
  const loads = await sidecar.store.poolLoads("llama");
  return ENGINES.map((engine) => loads.get(engine)?.requests ?? 0);
}

describe.skipIf(redisMissing !== undefined)("replicas sharing one Redis", () => {
  let redis: RedisServer;
  /** Each test on keys of its own. */
  let keyPrefix = "";
  const started: Sidecar[] = [];
  const clients: EnvoyExtProcClient[] = [];
  let child: Running | undefined;

  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(() => redis.stop());
  afterEach(async () => {
    child?.child.kill("SIGKILL");
    child = undefined;
    for (const client of clients.splice(0)) client.close();
    await Promise.all(started.splice(0).map((sidecar) => sidecar.stop(0)));
  });

  const replicaConfig = () => ({ load: { store: "redis", redis: { url: redis.url, keyPrefix, leaseSeconds: LEASE_SECONDS, timeoutMs: 200 } } });
  async function replica(capture?: LogCapture): Promise<{ sidecar: Sidecar; client: EnvoyExtProcClient }> {
    const sidecar = await startTestSidecar(pools, replicaConfig(), capture);
    started.push(sidecar);
    const client = new EnvoyExtProcClient(`127.0.0.1:${sidecar.ports.extproc}`);
    clients.push(client);
    return { sidecar, client };
  }

  it("3 replicas × 40 concurrent identical requests over 4 engines: every replica shows the same numbers, spread within 1", async () => {
    keyPrefix = `mc-${randomUUID()}:`;
    const replicas = await Promise.all([replica(), replica(), replica()]);
    const release = gate();
    const results = replicas.flatMap(({ client }) =>
      Array.from({ length: 40 }, () => client.exchange({ request: chatRequest(chat("llama", "same prompt", { stream: true })), upstream: sseEngine(release.promise), timeoutMs: 30_000 })),
    );
    await expect.poll(async () => (await requestsSeen(replicas[0]!.sidecar)).reduce((a, b) => a + b, 0), { timeout: 10_000 }).toBe(120);
    const views = await Promise.all(replicas.map(({ sidecar }) => requestsSeen(sidecar)));
    expect(views[1]).toEqual(views[0]);
    expect(views[2]).toEqual(views[0]);
    expect(Math.max(...views[0]!) - Math.min(...views[0]!)).toBeLessThanOrEqual(1);
    release.open();
    const done: ExchangeResult[] = await Promise.all(results);
    expect(done.filter((result) => result.status !== 200).map((result) => result.failure)).toEqual([]);
    for (const { sidecar } of replicas) await expect.poll(() => totalLoad(sidecar)).toEqual(idle);
  }, 60_000);

  it("with prefix affinity on, a prompt whose prefix one replica sent to an engine goes there from another replica too", async () => {
    keyPrefix = `mc-${randomUUID()}:`;
    const withPrefix = async (): Promise<{ sidecar: Sidecar; client: EnvoyExtProcClient }> => {
      const sidecar = await startTestSidecar(pools, { ...replicaConfig(), scheduling: { scorers: { prefix: 0.9 } } });
      started.push(sidecar);
      const client = new EnvoyExtProcClient(`127.0.0.1:${sidecar.ports.extproc}`);
      clients.push(client);
      return { sidecar, client };
    };
    const [a, b] = [await withPrefix(), await withPrefix()];
    const ask = (system: string, question: string) =>
      chatRequest(JSON.stringify({ model: "llama", messages: [{ role: "system", content: system }, { role: "user", content: question }] }));
    // Five unrelated long system prompts: each time B follows A's engine, never by a lucky tie (1 in 4 each).
    for (let topic = 0; topic < 5; topic += 1) {
      const system = `You answer questions about topic ${topic} for a company with ${topic * 17 + 3} warehouses. `.repeat(30);
      const first = await a.client.exchange({ request: ask(system, "first question"), upstream: sseEngine(Promise.resolve()) });
      expect(first.status).toBe(200);
      await new Promise((resolve) => setTimeout(resolve, 100));
      const second = await b.client.exchange({ request: ask(system, "a follow-up from another replica"), upstream: sseEngine(Promise.resolve()) });
      expect(second.routedTo).toBe(first.routedTo);
    }
    for (const { sidecar } of [a, b]) await expect.poll(() => totalLoad(sidecar)).toEqual(idle);
  });

  it("a replica killed (SIGKILL) while holding 30 requests: the others show them gone within leaseSeconds + 1 s", async () => {
    keyPrefix = `mc-${randomUUID()}:`;
    const survivor = await replica();
    const dir = tempFolder("mc-replica-");
    const file = join(dir, "mc.yaml");
    writeFileSync(file, JSON.stringify({ pools, extproc: { port: 0 }, health: { port: 0 }, http: { port: 0 }, ...replicaConfig() }));
    child = await serve(["--config", file]);
    const doomed = new EnvoyExtProcClient(`127.0.0.1:${child.ports.extproc}`);
    clients.push(doomed);
    const never = gate();
    const held = Array.from({ length: 30 }, () => doomed.exchange({ request: chatRequest(chat("llama", "held", { stream: true })), upstream: sseEngine(never.promise), timeoutMs: 30_000 }));
    await expect.poll(async () => (await requestsSeen(survivor.sidecar)).reduce((a, b) => a + b, 0), { timeout: 10_000 }).toBe(30);
    const killedAt = performance.now();
    child.child.kill("SIGKILL");
    await child.exit;
    await expect.poll(() => totalLoad(survivor.sidecar), { timeout: (LEASE_SECONDS + 1) * 1000, interval: 50 }).toEqual(idle);
    expect(performance.now() - killedAt).toBeLessThanOrEqual((LEASE_SECONDS + 1) * 1000);
    never.open();
    await Promise.allSettled(held);
  }, 60_000);

  it("Redis killed mid-traffic: requests keep being routed from each replica's own view; back again, the views converge and end at zero", async () => {
    keyPrefix = `mc-${randomUUID()}:`;
    const capture = new LogCapture();
    const [a, b] = await Promise.all([replica(capture), replica()]);
    const release = gate();
    const before = [a!, b!].flatMap(({ client }) =>
      Array.from({ length: 10 }, () => client.exchange({ request: chatRequest(chat("llama", "before", { stream: true })), upstream: sseEngine(release.promise), timeoutMs: 30_000 })),
    );
    await expect.poll(async () => (await requestsSeen(a!.sidecar)).reduce((x, y) => x + y, 0), { timeout: 10_000 }).toBe(20);
    await redis.kill();
    const during = await Promise.all(
      [a!, b!].flatMap(({ client }) => Array.from({ length: 10 }, () => client.exchange({ request: chatRequest(chat("llama", "during", { stream: true })), upstream: sseEngine(Promise.resolve()), timeoutMs: 30_000 }))),
    );
    expect(during.filter((result) => result.routedTo === undefined || result.status !== 200).map((result) => result.failure)).toEqual([]);
    expect(capture.withMessage("redis load store out: picking from this sidecar's own view")).toHaveLength(1);
    await redis.restart();
    release.open();
    await Promise.all(before);
    await expect.poll(() => capture.withMessage("redis load store back: picks are shared again").length, { timeout: 10_000 }).toBe(1);
    const after = await Promise.all(
      [a!, b!].map(({ client }) => client.exchange({ request: chatRequest(chat("llama", "after", { stream: true })), upstream: sseEngine(Promise.resolve()), timeoutMs: 30_000 })),
    );
    expect(after.map((result) => result.status)).toEqual([200, 200]);
    for (const { sidecar } of [a!, b!]) await expect.poll(() => totalLoad(sidecar), { timeout: 10_000 }).toEqual(idle);
  }, 60_000);
});
