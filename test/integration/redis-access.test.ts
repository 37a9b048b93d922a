import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis, type RedisOptions } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { snapshotsOf } from "../../src/load/redis/redis-store.js";
import type { EngineSnapshot } from "../../src/load/store.js";
import { TestCertificates, type Issued } from "../support/certificates.js";
import { serve, type Running } from "../support/process.js";
import { scrape, valueOf } from "../support/prometheus.js";
import { redisMissing, startRedis, startRedisCluster, type RedisServer } from "../support/redis.js";
import { LogCapture, startTestSidecar } from "../support/sidecar.js";

// Issue #10, item 2: how a sidecar reaches Redis (TLS, passwords, a Cluster), each against a real
// redis-server; and that a connection it cannot make (an untrusted certificate, plaintext to a TLS
// port, a wrong or missing password) fails open, naming why, instead of hanging or crashing.

const pools = [
  { name: "llama", models: ["llama"], endpoints: ["10.0.0.1:8000", "10.0.0.2:8000"] },
  { name: "qwen", models: ["qwen"], endpoints: ["10.0.1.1:8000"] },
];
const OUT = "redis load store out: picking from this sidecar's own view";
/** Generous: a working Redis on a loaded machine must not look out. */
const TIMEOUT_MS = 1000;

if (redisMissing !== undefined) it.skip(`Redis access: ${redisMissing}`, () => undefined);

type InProcess = Awaited<ReturnType<typeof startTestSidecar>>;
/** A sidecar in this process or as its own: its HTTP port and the log lines it wrote. */
interface Replica {
  http: number;
  lines: () => Array<Record<string, unknown>>;
}

const started: InProcess[] = [];
const processes: Running[] = [];
const dir = mkdtempSync(join(tmpdir(), "mc-redis-access-"));
afterEach(async () => {
  for (const child of processes.splice(0)) child.child.kill("SIGKILL");
  await Promise.all(started.splice(0).map((sidecar) => sidecar.stop(0)));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** `load.redis` for a test of its own (keys under their own prefix). */
const redisConfig = (redis: Record<string, unknown>) => ({ load: { store: "redis", redis: { timeoutMs: TIMEOUT_MS, ...redis } } });

async function inProcess(redis: Record<string, unknown>): Promise<Replica> {
  const capture = new LogCapture();
  const sidecar = await startTestSidecar(pools, redisConfig(redis), capture);
  started.push(sidecar);
  return { http: sidecar.ports.http, lines: () => capture.lines };
}

/** `metadata-center serve` as its own process, with this environment (NODE_EXTRA_CA_CERTS is read only at a process's start). */
async function asProcess(redis: Record<string, unknown>, env: Record<string, string>): Promise<Replica> {
  const file = join(dir, `mc-${randomUUID()}.json`);
  writeFileSync(file, JSON.stringify({ extproc: { port: 0 }, health: { port: 0 }, http: { port: 0 }, pools, ...redisConfig(redis) }));
  const child = await serve(["--config", file], env);
  processes.push(child);
  return { http: child.ports.http, lines: () => child.logged };
}

async function call(replica: Replica, method: string, path: string, body?: unknown): Promise<{ status: string; data: unknown }> {
  const response = await fetch(`http://127.0.0.1:${replica.http}${path}`, {
    method,
    ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { "content-type": "application/json" } }),
  });
  expect(response.status).toBe(200);
  return (await response.json()) as { status: string; data: unknown };
}

const add = (replica: Replica, id: string, cluster = "llama", ip = "10.0.0.1") => call(replica, "POST", "/v1/load/stats", { cluster, request_id: id, prompt_length: 100, ip });
const end = (replica: Replica, id: string) => call(replica, "DELETE", "/v1/load/stats", { request_id: id });
/** queued_req_num per engine of a cluster, as one replica answers GET /v1/load/stats. */
async function queued(replica: Replica, cluster = "llama"): Promise<Record<string, number>> {
  const { data } = await call(replica, "GET", `/v1/load/stats?cluster=${cluster}`);
  return Object.fromEntries(((data ?? []) as Array<{ endpoint: string; queued_req_num: number }>).map((engine) => [engine.endpoint, engine.queued_req_num]));
}
const fallbackGauge = async (replica: Replica) => valueOf(await scrape(replica.http), "metadata_center_store_fallback");

/** The pool's engines' counters as Redis holds them, read by a client of the test's own. */
async function countersInRedis(options: RedisOptions, keyPrefix: string, pool = "llama"): Promise<Map<string, EngineSnapshot>> {
  const admin = new Redis({ ...options, lazyConnect: true, maxRetriesPerRequest: 0 });
  try {
    await admin.connect();
    return snapshotsOf(await admin.hgetallBuffer(`${keyPrefix}{${pool}}:engines`));
  } finally {
    admin.disconnect();
  }
}

/** The sidecar reaches Redis: an add through it is in Redis, and its view is the shared one. */
async function expectShared(replica: Replica, admin: RedisOptions, keyPrefix: string): Promise<void> {
  const id = randomUUID();
  await add(replica, id);
  expect((await countersInRedis(admin, keyPrefix)).get("10.0.0.1:8000")).toMatchObject({ requests: 1, prefillTokens: 100 });
  expect(await fallbackGauge(replica)).toBe(0);
  await end(replica, id);
  expect((await countersInRedis(admin, keyPrefix)).get("10.0.0.1:8000")).toMatchObject({ requests: 0, prefillTokens: 0 });
  expect(replica.lines().filter((line) => line["msg"] === OUT)).toEqual([]);
}

/**
 * Failed open: serving from its own view (an add and its end counted there), the gauge at 1, and
 * the log naming the cause, both where the connection failed and where the store went out.
 */
async function expectFailedOpen(replica: Replica, cause: RegExp): Promise<void> {
  const messages = replica.lines().map((line) => line["msg"]);
  // Out at start, before serving, not only once a request finds out.
  expect(messages.indexOf(OUT)).toBeGreaterThanOrEqual(0);
  expect(messages.indexOf(OUT)).toBeLessThan(messages.indexOf("metadata-center serving"));
  expect(await fallbackGauge(replica)).toBe(1);
  const out = replica.lines().filter((line) => line["msg"] === OUT);
  expect(out).toHaveLength(1);
  expect(String(out[0]?.["connection"])).toMatch(cause);
  expect(replica.lines().some((line) => line["msg"] === "redis connection error" && line["level"] === 40 && cause.test(String(line["reason"])))).toBe(true);
  const id = randomUUID();
  await add(replica, id);
  expect(await queued(replica)).toEqual({ "10.0.0.1:8000": 1, "10.0.0.2:8000": 0 });
  await end(replica, id);
  expect(await queued(replica)).toEqual({ "10.0.0.1:8000": 0, "10.0.0.2:8000": 0 });
  expect(await fallbackGauge(replica)).toBe(1);
}

describe.skipIf(redisMissing !== undefined)("Redis over TLS (rediss://)", () => {
  const certificates = new TestCertificates();
  let ca: Issued;
  let otherCa: Issued;
  let redis: RedisServer;
  beforeAll(async () => {
    ca = certificates.ca("redis-ca");
    otherCa = certificates.ca("other-ca");
    const server = certificates.issue(ca, "redis", "server");
    redis = await startRedis([], { tls: { certFile: server.certFile, keyFile: server.keyFile, caFile: ca.certFile } });
  });
  afterAll(async () => {
    await redis.stop();
    certificates.remove();
  });
  const admin = (): RedisOptions => ({ port: redis.port, host: "127.0.0.1", tls: { ca: ca.cert } });

  it("trusts a private CA given as load.redis.caFile, or to the process as NODE_EXTRA_CA_CERTS: both connect and share one view", async () => {
    const keyPrefix = `mc-${randomUUID()}:`;
    expect(redis.url).toMatch(/^rediss:\/\//);
    const viaCaFile = await inProcess({ url: redis.url, keyPrefix, caFile: ca.certFile });
    await expectShared(viaCaFile, admin(), keyPrefix);
    const viaEnv = await asProcess({ url: redis.url, keyPrefix }, { NODE_EXTRA_CA_CERTS: ca.certFile });
    await expectShared(viaEnv, admin(), keyPrefix);
    const id = randomUUID();
    await add(viaEnv, id);
    expect(await queued(viaCaFile)).toEqual({ "10.0.0.1:8000": 1, "10.0.0.2:8000": 0 });
    await end(viaCaFile, id);
    expect(await queued(viaEnv)).toEqual({ "10.0.0.1:8000": 0, "10.0.0.2:8000": 0 });
  }, 60_000);

  it("fails open on a server certificate it does not trust (Node's default roots; a caFile of another CA), naming the verification error", async () => {
    for (const caFile of [undefined, otherCa.certFile]) {
      const replica = await inProcess({ url: redis.url, keyPrefix: `mc-${randomUUID()}:`, ...(caFile === undefined ? {} : { caFile }) });
      await expectFailedOpen(replica, /certificate/);
    }
  }, 60_000);

  it("fails open on plaintext redis:// to the TLS port, at start and without hanging", async () => {
    const replica = await inProcess({ url: redis.url.replace("rediss://", "redis://"), keyPrefix: `mc-${randomUUID()}:` });
    await expectFailedOpen(replica, /ECONNRESET|Connection is closed|socket/i);
  }, 30_000);
});

describe.skipIf(redisMissing !== undefined)("Redis with a password (requirepass, and an ACL user)", () => {
  // Characters a URL must carry percent-encoded, and a space, a quote and a # for the file and the environment.
  const PASSWORD = 'p@ss:w/rd %#"x';
  const ALICE = "al!ce@:/%?";
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedis(["--user", "alice", "on", `>${ALICE}`, "~*", "&*", "+@all"], { password: PASSWORD });
  });
  afterAll(() => redis.stop());
  const admin = (): RedisOptions => ({ port: redis.port, host: "127.0.0.1", password: PASSWORD });
  const withAuth = (auth: string) => redis.url.replace("redis://", `redis://${auth}@`);

  it("takes it from the URL (percent-encoded, with or without the user default, or as another ACL user)", async () => {
    expect(process.env["METADATA_CENTER_REDIS_PASSWORD"]).toBeUndefined();
    for (const auth of [`:${encodeURIComponent(PASSWORD)}`, `default:${encodeURIComponent(PASSWORD)}`, `alice:${encodeURIComponent(ALICE)}`]) {
      const keyPrefix = `mc-${randomUUID()}:`;
      await expectShared(await inProcess({ url: withAuth(auth), keyPrefix }), admin(), keyPrefix);
    }
  }, 60_000);

  it("uses the database the URL's path names", async () => {
    const keyPrefix = `mc-${randomUUID()}:`;
    await expectShared(await inProcess({ url: `${withAuth(`:${encodeURIComponent(PASSWORD)}`)}/3`, keyPrefix }), { ...admin(), db: 3 }, keyPrefix);
    expect(await countersInRedis(admin(), keyPrefix)).toEqual(new Map());
  });

  it("takes it from load.redis.passwordFile (its trailing newline dropped)", async () => {
    const file = join(dir, "redis-password");
    writeFileSync(file, `${PASSWORD}\n`);
    const keyPrefix = `mc-${randomUUID()}:`;
    await expectShared(await inProcess({ url: redis.url, keyPrefix, passwordFile: file }), admin(), keyPrefix);
  });

  it("takes the URL's password over passwordFile's", async () => {
    const file = join(dir, "stale-password");
    writeFileSync(file, "stale\n");
    const keyPrefix = `mc-${randomUUID()}:`;
    await expectShared(await inProcess({ url: withAuth(`:${encodeURIComponent(PASSWORD)}`), keyPrefix, passwordFile: file }), admin(), keyPrefix);
  });

  it("takes it from METADATA_CENTER_REDIS_PASSWORD, also for a user named in the URL", async () => {
    const keyPrefix = `mc-${randomUUID()}:`;
    const [asDefault, asAlice] = await Promise.all([
      asProcess({ url: redis.url, keyPrefix }, { METADATA_CENTER_REDIS_PASSWORD: PASSWORD }),
      asProcess({ url: withAuth("alice"), keyPrefix }, { METADATA_CENTER_REDIS_PASSWORD: ALICE }),
    ]);
    await expectShared(asDefault!, admin(), keyPrefix);
    await expectShared(asAlice!, admin(), keyPrefix);
  }, 60_000);

  it("fails open on a wrong password (WRONGPASS) and on none given (NOAUTH), naming which", async () => {
    await expectFailedOpen(await inProcess({ url: withAuth(":wrong"), keyPrefix: `mc-${randomUUID()}:` }), /^WRONGPASS/);
    await expectFailedOpen(await inProcess({ url: withAuth("alice:wrong"), keyPrefix: `mc-${randomUUID()}:` }), /^WRONGPASS/);
    await expectFailedOpen(await inProcess({ url: redis.url, keyPrefix: `mc-${randomUUID()}:` }), /^NOAUTH/);
  }, 60_000);
});

describe.skipIf(redisMissing !== undefined)("a Redis Cluster with a password, over its seed list", () => {
  const PASSWORD = "cluster p@ss";
  let cluster: Awaited<ReturnType<typeof startRedisCluster>>;
  beforeAll(async () => {
    cluster = await startRedisCluster(3, { password: PASSWORD });
  }, 30_000);
  afterAll(() => cluster.stop());
  const seeds = (auth: string) => cluster.urls.map((url) => url.replace("redis://", `redis://${auth}@`));
  const port = (url: string) => Number(new URL(url).port);

  it("works with the password in the URLs or in the environment; every key of a pool on one node in one slot, two pools on two nodes", async () => {
    const keyPrefix = `mc-${randomUUID()}:`;
    const a = await inProcess({ url: seeds(`:${encodeURIComponent(PASSWORD)}`), keyPrefix });
    const b = await asProcess({ url: cluster.urls, keyPrefix }, { METADATA_CENTER_REDIS_PASSWORD: PASSWORD });
    const ids = [randomUUID(), randomUUID()];
    await add(a, ids[0]!, "llama", "10.0.0.2");
    await add(b, ids[1]!, "qwen", "10.0.1.1");
    expect(await queued(b, "llama")).toEqual({ "10.0.0.1:8000": 0, "10.0.0.2:8000": 1 });
    expect(await queued(a, "qwen")).toEqual({ "10.0.1.1:8000": 1 });
    for (const replica of [a, b]) expect(await fallbackGauge(replica)).toBe(0);

    // Each node's keys under this test's prefix, asked of the node itself.
    const nodeOf = new Map<string, Set<number>>();
    const slotOf = new Map<string, Set<number>>();
    for (const url of cluster.urls) {
      const node = new Redis({ port: port(url), host: "127.0.0.1", password: PASSWORD });
      try {
        for (const key of await node.keys(`${keyPrefix}{*}*`)) {
          const pool = /\{([^}]*)\}/.exec(key)?.[1] ?? "";
          nodeOf.set(pool, (nodeOf.get(pool) ?? new Set()).add(port(url)));
          slotOf.set(pool, (slotOf.get(pool) ?? new Set()).add(await node.cluster("KEYSLOT", key)));
        }
      } finally {
        node.disconnect();
      }
    }
    expect([...nodeOf.keys()].sort()).toEqual(["llama", "qwen"]);
    for (const pool of ["llama", "qwen"]) {
      expect(nodeOf.get(pool)?.size, pool).toBe(1);
      expect(slotOf.get(pool)?.size, pool).toBe(1);
    }
    expect([...nodeOf.get("llama")!][0]).not.toBe([...nodeOf.get("qwen")!][0]);

    await end(b, ids[0]!);
    await end(a, ids[1]!);
    expect(await queued(a, "llama")).toEqual({ "10.0.0.1:8000": 0, "10.0.0.2:8000": 0 });
    expect(await queued(b, "qwen")).toEqual({ "10.0.1.1:8000": 0 });
  }, 60_000);

  it("fails open on a wrong password, naming WRONGPASS", async () => {
    await expectFailedOpen(await inProcess({ url: seeds(":wrong"), keyPrefix: `mc-${randomUUID()}:` }), /^WRONGPASS/);
  }, 30_000);
});
