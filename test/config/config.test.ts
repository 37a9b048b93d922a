import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig, parseConfig } from "../../src/config/load.js";
import { isEngineAddress, isLoopbackHost } from "../../src/config/schema.js";
import { watchConfig } from "../../src/config/watch.js";

const minimal = `pools:\n  - name: a\n    models: ["m"]\n    endpoints: ["10.0.0.1:8000"]\n`;

describe("config", () => {
  it("fills every default from a file that lists only pools", () => {
    const config = parseConfig(minimal, "c.yaml");
    expect(config.role).toBe("picker");
    expect(config.extproc).toMatchObject({ host: "127.0.0.1", port: 9002, assumedBodyModes: { request: "FULL_DUPLEX_STREAMED" } });
    expect(config.health).toEqual({ host: "127.0.0.1", port: 9003 });
    expect(config.http).toEqual({ host: "127.0.0.1", port: 9090 });
    expect(config.load).toMatchObject({ ttlSeconds: 660, sweepSeconds: 60 });
  });

  it("trusts no routing header unless named, and names an unknown one", () => {
    expect(parseConfig(minimal, "c.yaml").extproc.trustedHeaders).toEqual([]);
    expect(parseConfig(`extproc: { trustedHeaders: [x-gateway-model-name-rewrite] }\n${minimal}`, "c.yaml").extproc.trustedHeaders).toEqual([
      "x-gateway-model-name-rewrite",
    ]);
    expect(() => parseConfig(`extproc: { trustedHeaders: [x-forwarded-for] }\n${minimal}`, "c.yaml")).toThrow(/extproc\.trustedHeaders\[0\]: .*x-gateway-model-name-rewrite/);
    expect(parseConfig(minimal, "c.yaml").scheduling.probeTimeoutSeconds).toBe(1);
    expect(() => parseConfig(`scheduling: { probeTimeoutSeconds: 0 }\n${minimal}`, "c.yaml")).toThrow(/scheduling\.probeTimeoutSeconds/);
  });

  it("keeps the last 100 picks explained by default, from 0 (none) to 1000", () => {
    expect(parseConfig(minimal, "c.yaml").scheduling.debugPicks).toBe(100);
    expect(parseConfig(`scheduling: { debugPicks: 0 }\n${minimal}`, "c.yaml").scheduling.debugPicks).toBe(0);
    for (const bad of ["-1", "1.5", "1001", "many"]) {
      expect(() => parseConfig(`scheduling: { debugPicks: ${bad} }\n${minimal}`, "c.yaml")).toThrow(/scheduling\.debugPicks/);
    }
  });

  it("accepts JSON, which is YAML too", () => {
    const config = parseConfig(JSON.stringify({ pools: [{ name: "a", models: ["*"], endpoints: [] }] }), "c.json");
    expect(config.pools[0]?.models).toEqual(["*"]);
  });

  it("names the file, each field and the problem", () => {
    const bad = `role: router\nhttp: { port: 70000 }\nbogus: 1\npools:\n  - name: a\n    models: []\n    endpoints: ["example.com:80", "10.0.0.1"]\n  - { name: a, models: [m], endpoints: [] }\n`;
    let message = "";
    try {
      parseConfig(bad, "/etc/mc.yaml");
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      message = (error as Error).message;
    }
    expect(message).toContain("/etc/mc.yaml");
    expect(message).toMatch(/role: /);
    expect(message).toMatch(/http\.port: .*65535/);
    expect(message).toMatch(/bogus/);
    expect(message).toMatch(/pools\[0\]\.models: /);
    expect(message).toContain('pools[0].endpoints[0]: "example.com:80" is not a literal ip:port');
    expect(message).toContain('pools[0].endpoints[1]: "10.0.0.1" is not a literal ip:port');
  });

  it("refuses a model served by two pools, and a file with no pools", () => {
    expect(() => parseConfig(`${minimal}  - { name: b, models: [m], endpoints: [] }\n`, "c.yaml")).toThrow(/already served by pool 'a'/);
    expect(() => parseConfig(`${minimal}  - { name: a, models: [n], endpoints: [] }\n`, "c.yaml")).toThrow(
      /pools\[1\]\.name: pool name 'a' is used twice/,
    );
    expect(() => parseConfig("role: picker\n", "c.yaml")).toThrow(/pools: /);
    expect(() => parseConfig("pools: [\n", "c.yaml")).toThrow(/not valid YAML/);
    expect(() => loadConfig("/nonexistent/mc.yaml")).toThrow(/cannot be read/);
  });

  it("applies overrides over the file and names their source when bad", () => {
    const config = parseConfig(minimal, "c.yaml", [{ path: ["http", "port"], value: "8081", source: "--http-port", numeric: true }]);
    expect(config.http.port).toBe(8081);
    expect(() => parseConfig(minimal, "c.yaml", [{ path: ["http", "port"], value: "eighty", source: "env X", numeric: true }])).toThrow(
      /http\.port \(from env X\): "eighty" is not a number/,
    );
  });

  it("requires http.token when the HTTP API listens beyond loopback", () => {
    const exposed = `http: { host: 0.0.0.0 }\n${minimal}`;
    expect(() => parseConfig(exposed, "c.yaml")).toThrow(/http\.token: required when http\.host \(0\.0\.0\.0\) is not a loopback address/);
    expect(() => parseConfig(`http: { host: 0.0.0.0, token: short }\n${minimal}`, "c.yaml")).toThrow(/http\.token: must be at least 16 characters/);
    const token = "0123456789abcdef0123";
    const fromEnv = parseConfig(exposed, "c.yaml", [{ path: ["http", "token"], value: token, source: "env METADATA_CENTER_HTTP_TOKEN", numeric: false }]);
    expect(fromEnv.http.token).toBe(token);
    expect(parseConfig(minimal, "c.yaml").http.token).toBeUndefined();
  });

  it("knows which HTTP hosts are loopback", () => {
    for (const host of ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]", "::ffff:127.0.0.1"]) expect(isLoopbackHost(host)).toBe(true);
    for (const host of ["0.0.0.0", "::", "10.0.0.1", "example.com", "128.0.0.1"]) expect(isLoopbackHost(host)).toBe(false);
  });

  it("takes a pool's engines from DNS instead of endpoints, never both; scheduling defaults", () => {
    const config = parseConfig(`pools:\n  - { name: a, models: [m], dns: { name: engines.svc, port: 8000, servers: ["10.0.0.53", "127.0.0.1:5353"] } }\n`, "c.yaml");
    expect(config.pools[0]).toMatchObject({ endpoints: [], dns: { name: "engines.svc", port: 8000, intervalSeconds: 10 } });
    expect(config.scheduling).toMatchObject({ fallbacks: 0, maxRequestsPerEngine: 0, ejectAfterErrors: 5, ejectSeconds: 10, slowStartSeconds: 30 });
    expect(() => parseConfig(`pools:\n  - { name: a, models: [m], endpoints: ["10.0.0.1:1"], dns: { name: x, port: 1 } }\n`, "c.yaml")).toThrow(
      /pools\[0\]\.endpoints: give either endpoints or dns, not both/,
    );
    expect(() => parseConfig(`pools:\n  - { name: a, models: [m], dns: { name: x, port: 1, servers: [dns.example] } }\n`, "c.yaml")).toThrow(
      /"dns.example" is not an ip or ip:port/,
    );
  });

  it("limits ext_proc streams and messages; a message must hold a BUFFERED body of maxRequestBodyBytes", () => {
    expect(parseConfig(minimal, "c.yaml").extproc).toMatchObject({ maxStreams: 10_000, maxRequestBodyBytes: 16 << 20, maxMessageBytes: 17 << 20 });
    expect(parseConfig(`extproc: { maxRequestBodyBytes: 1024 }\n${minimal}`, "c.yaml").extproc.maxMessageBytes).toBe(4 << 20);
    expect(parseConfig(`extproc: { maxMessageBytes: 33554432, maxStreams: 50 }\n${minimal}`, "c.yaml").extproc).toMatchObject({
      maxMessageBytes: 32 << 20,
      maxStreams: 50,
    });
    expect(() => parseConfig(`extproc: { maxMessageBytes: 4194304 }\n${minimal}`, "/etc/mc.yaml")).toThrow(
      /\/etc\/mc\.yaml is invalid:\n {2}- extproc\.maxMessageBytes: must be at least extproc\.maxRequestBodyBytes \+ 1 MiB \(17825792\): a BUFFERED request body arrives in one message/,
    );
    expect(() => parseConfig(`extproc: { maxStreams: 0 }\n${minimal}`, "c.yaml")).toThrow(/extproc\.maxStreams: /);
  });

  it("serves ext_proc in plaintext without extproc.tls, and names a TLS file that does not exist", () => {
    expect(parseConfig(minimal, "c.yaml").extproc.tls).toBeUndefined();
    // Existing files; what they hold is checked when the sidecar loads them.
    const here = fileURLToPath(import.meta.url);
    const tls = parseConfig(`extproc: { tls: { certFile: ${here}, keyFile: ${here} } }\n${minimal}`, "c.yaml");
    expect(tls.extproc.tls).toEqual({ certFile: here, keyFile: here });
    let message = "";
    try {
      parseConfig(`extproc: { tls: { certFile: /nope/tls.crt, keyFile: /nope/tls.key, clientCaFile: /nope/ca.crt } }\n${minimal}`, "/etc/mc.yaml");
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toContain("/etc/mc.yaml is invalid:");
    expect(message).toContain('extproc.tls.certFile: certificate file "/nope/tls.crt" does not exist');
    expect(message).toContain('extproc.tls.keyFile: private key file "/nope/tls.key" does not exist');
    expect(message).toContain('extproc.tls.clientCaFile: client CA file "/nope/ca.crt" does not exist');
    expect(() => parseConfig(`extproc: { tls: { certFile: ${here} } }\n${minimal}`, "c.yaml")).toThrow(/extproc\.tls\.keyFile: /);
    expect(() => parseConfig(`extproc: { tls: { certFile: ${here}, keyFile: ${here}, caFile: ${here} } }\n${minimal}`, "c.yaml")).toThrow(
      /extproc\.tls: .*caFile/,
    );
  });

  it("takes only literal ip:port engine addresses", () => {
    expect(isEngineAddress("10.0.0.1:8000")).toBe(true);
    expect(isEngineAddress("[::1]:8000")).toBe(true);
    expect(isEngineAddress("::1:8000")).toBe(false);
    expect(isEngineAddress("10.0.0.1:0")).toBe(false);
    expect(isEngineAddress("10.0.0.1:70000")).toBe(false);
    expect(isEngineAddress("localhost:8000")).toBe(false);
  });

  it("hot reloads a changed file, and keeps the last good config when the new one is bad", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mc-config-"));
    const file = join(dir, "mc.yaml");
    writeFileSync(file, minimal);
    const reloaded: string[][] = [];
    const rejected: string[] = [];
    const watch = watchConfig(file, [], (config) => reloaded.push([...(config.pools[0]?.endpoints ?? [])]), (error) => rejected.push(error.message), 20);
    try {
      await new Promise((resolve) => setTimeout(resolve, 50));
      // Replace by rename, as editors and Kubernetes do.
      writeFileSync(join(dir, "next.tmp"), minimal.replace("10.0.0.1:8000", "10.0.0.2:8000"));
      renameSync(join(dir, "next.tmp"), file);
      await expect.poll(() => reloaded.length, { timeout: 5000 }).toBe(1);
      expect(reloaded[0]).toEqual(["10.0.0.2:8000"]);
      writeFileSync(file, "pools: []\n");
      await expect.poll(() => rejected.length, { timeout: 5000 }).toBe(1);
      expect(rejected[0]).toMatch(/pools: /);
      expect(reloaded).toHaveLength(1);
    } finally {
      watch.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
