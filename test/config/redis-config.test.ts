import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config/load.js";
import { parseRedisUrl } from "../../src/config/redis-url.js";
import { node, root } from "../support/process.js";

const pools = [{ name: "a", models: ["m"], endpoints: ["10.0.0.1:8000"] }];
const withRedis = (redis: Record<string, unknown>) => parseConfig(JSON.stringify({ pools, load: { store: "redis", redis } }), "c.json");
/** The config error for these `load.redis` settings ("" when they are accepted). */
const refusal = (redis: Record<string, unknown>): string => {
  try {
    withRedis(redis);
    return "";
  } catch (error) {
    return (error as Error).message;
  }
};

describe("load.redis.url", () => {
  it("reads user, password (percent-decoded), port, database and TLS as redis-cli and ioredis do", () => {
    expect(parseRedisUrl("redis://10.0.0.5")).toEqual({ host: "10.0.0.5", port: 6379, db: 0, tls: false });
    expect(parseRedisUrl("rediss://:p%40ss%3Aw%2Frd%25@cache.example:6380/")).toEqual({ host: "cache.example", port: 6380, password: "p@ss:w/rd%", db: 0, tls: true });
    expect(parseRedisUrl("redis://default:s3cret@[::1]:7000/2")).toEqual({ host: "::1", port: 7000, username: "default", password: "s3cret", db: 2, tls: false });
    // A user alone: the password then comes from passwordFile or METADATA_CENTER_REDIS_PASSWORD.
    expect(parseRedisUrl("redis://alice@h")).toEqual({ host: "h", port: 6379, username: "alice", db: 0, tls: false });
    // Characters the URL parser encodes itself come back as written.
    expect(parseRedisUrl(`redis://:it's"a:b{c}&*d@host:6379`).password).toBe(`it's"a:b{c}&*d`);
  });

  it("refuses what it would otherwise misread, naming the problem and never the password", () => {
    const cases: Array<[string, RegExp]> = [
      ["http://h:6379", /load\.redis\.url: is not a redis:\/\/ or rediss:\/\/ URL/],
      ["redis://:100%secret@h", /load\.redis\.url: its password is not percent-encoded correctly/],
      ["redis://:a#secret@h", /load\.redis\.url: is not a URL \(characters such as @ : \/ \? # % in a password must be percent-encoded\)/],
      ["redis://:pw@", /load\.redis\.url: is not a URL/],
      ["redis://h:6379/?secret", /load\.redis\.url: has a query or fragment, which is not read/],
      ["redis://h:6379/cache", /load\.redis\.url: has a path that is not a database number/],
    ];
    for (const [url, message] of cases) {
      const refused = refusal({ url });
      expect(refused, url).toMatch(message);
      expect(refused, url).not.toContain("secret");
    }
  });

  it("takes a Cluster's seeds only when they agree on scheme, user and password, all on database 0", () => {
    expect(withRedis({ url: ["redis://:pw@a:7000", "redis://:pw@b:7000"] }).load.redis.url).toEqual(["redis://:pw@a:7000", "redis://:pw@b:7000"]);
    expect(refusal({ url: ["redis://a:7000", "redis://b:7000/1"] })).toContain("load.redis.url[1]: names a database: a Redis Cluster has only database 0");
    expect(refusal({ url: ["rediss://a:7000", "redis://b:7000"] })).toContain("load.redis.url[1]: differs from the first seed in scheme, user or password");
    expect(refusal({ url: ["redis://:pw@a:7000", "redis://:other@b:7000"] })).toContain("load.redis.url[1]: differs from the first seed");
    expect(refusal({ url: ["redis://:pw@a:7000", "redis://b:7000"] })).toContain("load.redis.url[1]: differs from the first seed");
  });
});

describe("load.redis files", () => {
  const dir = mkdtempSync(join(tmpdir(), "mc-redis-config-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("refuses a passwordFile or caFile that does not exist, naming the field and the file", () => {
    const missing = join(dir, "nothing-here");
    expect(refusal({ passwordFile: missing })).toContain(`load.redis.passwordFile: password file "${missing}" does not exist`);
    expect(refusal({ url: "rediss://h", caFile: missing })).toContain(`load.redis.caFile: CA file "${missing}" does not exist`);
  });

  it("reads caFile only for a rediss:// URL", () => {
    const ca = join(dir, "ca.crt");
    writeFileSync(ca, "");
    expect(refusal({ url: "redis://h", caFile: ca })).toContain("load.redis.caFile: is only read for a rediss:// (TLS) url");
    expect(withRedis({ url: "rediss://h", caFile: ca }).load.redis.caFile).toBe(ca);
  });

  /** `serve` on this config: it must stop at start, before any Redis is reached. */
  function serveFails(redis: Record<string, unknown>): { status: number | null; stderr: string; file: string } {
    const file = join(dir, `mc-${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(file, JSON.stringify({ extproc: { port: 0 }, health: { port: 0 }, http: { port: 0 }, pools, load: { store: "redis", redis } }));
    const result = spawnSync(...node(["serve", "--config", file]), { cwd: root, encoding: "utf8", timeout: 20_000 });
    return { status: result.status, stderr: result.stderr, file };
  }

  it("stops the start with a config error naming the field and the file when a passwordFile or caFile exists but cannot be used", () => {
    const folder = join(dir, "a-folder");
    mkdirSync(folder);
    const empty = join(dir, "empty-password");
    writeFileSync(empty, "\n");
    const notPem = join(dir, "not-a-ca.crt");
    writeFileSync(notPem, "not a certificate\n");
    const broken = join(dir, "broken-ca.crt");
    writeFileSync(broken, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ passwordFile: folder }, `load.redis.passwordFile: ${folder} cannot be read: EISDIR`],
      [{ passwordFile: empty }, `load.redis.passwordFile: ${empty} is empty`],
      [{ url: "rediss://127.0.0.1:1", caFile: notPem }, `load.redis.caFile: ${notPem} holds no PEM certificate`],
      [{ url: "rediss://127.0.0.1:1", caFile: broken }, `load.redis.caFile: certificate 1 in ${broken} does not parse`],
    ];
    for (const [redis, message] of cases) {
      const { status, stderr, file } = serveFails(redis);
      expect(status, message).toBe(1);
      expect(stderr).toContain(`config ${file} is invalid:\n  - ${message}`);
    }
  }, 60_000);
});
