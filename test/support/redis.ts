import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createConnection, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { closedPort } from "./ports.js";

const binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].find((path) => existsSync(path));
const cli = ["/usr/bin/redis-cli", "/usr/local/bin/redis-cli"].find((path) => existsSync(path));

/**
 * Why the Redis tests cannot run here, or undefined when they can. With METADATA_CENTER_REQUIRE_REDIS
 * set (as .ci/run sets it) a missing redis-server fails them instead of skipping them.
 */
export const redisMissing: string | undefined = (() => {
  if (binary !== undefined && cli !== undefined) return undefined;
  const reason = "redis-server not installed (apt-get install redis-server)";
  if (process.env["METADATA_CENTER_REQUIRE_REDIS"]) throw new Error(reason);
  return reason;
})();

/** A real redis-server on a loopback port of its own, in a temp folder removed at `stop`. */
export interface RedisServer {
  port: number;
  url: string;
  /** Kills the process (SIGKILL: nothing saved, as a crash). */
  kill(): Promise<void>;
  /** Starts it again on the same port, empty. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** TLS instead of plaintext: redis-server's own `tls-*` settings, PEM files. */
export interface RedisTls {
  certFile: string;
  keyFile: string;
  /** The CA redis-server would check client certificates against (they are not asked for: `tls-auth-clients no`). */
  caFile: string;
}

export interface RedisOptions {
  /** `requirepass` (and `masterauth`, for a Cluster's nodes). */
  password?: string;
  /** Serve TLS only (`--port 0 --tls-port`): the URL is then rediss://. */
  tls?: RedisTls;
}

/** True once the server answers PING: PONG, or NOAUTH when it wants a password (it is up either way). */
async function answersPing(port: number, tls: boolean): Promise<boolean> {
  return new Promise((resolve) => {
    const ping = (): boolean => socket.write("PING\r\n");
    const socket: Socket = tls ? tlsConnect({ port, host: "127.0.0.1", rejectUnauthorized: false }, ping) : createConnection(port, "127.0.0.1", ping);
    socket.once("data", (data) => {
      socket.destroy();
      resolve(/^(\+PONG|-NOAUTH)/.test(data.toString()));
    });
    socket.once("error", () => resolve(false));
  });
}

/** redis-server's arguments for these options. */
function accessArgs(port: number, options: RedisOptions): string[] {
  const password = options.password === undefined ? [] : ["--requirepass", options.password, "--masterauth", options.password];
  const { tls } = options;
  const transport =
    tls === undefined
      ? ["--port", String(port)]
      : ["--port", "0", "--tls-port", String(port), "--tls-cert-file", tls.certFile, "--tls-key-file", tls.keyFile, "--tls-ca-cert-file", tls.caFile, "--tls-auth-clients", "no"];
  return [...transport, ...password];
}

async function spawnRedis(port: number, dir: string, extra: string[], options: RedisOptions): Promise<ChildProcess> {
  const args = [...accessArgs(port, options), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, ...extra];
  const child = spawn(binary ?? "redis-server", args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
  for (let attempt = 0; attempt < 200; attempt++) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}: ${stderr}`);
    if (await answersPing(port, options.tls !== undefined)) return child;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  child.kill("SIGKILL");
  throw new Error(`redis-server did not answer on ${port}: ${stderr}`);
}

const exited = (child: ChildProcess): Promise<void> =>
  child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((resolve) => child.once("exit", () => resolve()));

export async function startRedis(extra: string[] = [], options: RedisOptions = {}): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), "mc-redis-"));
  const port = await closedPort();
  let child = await spawnRedis(port, dir, extra, options);
  const kill = async (): Promise<void> => {
    child.kill("SIGKILL");
    await exited(child);
  };
  return {
    port,
    url: `${options.tls === undefined ? "redis" : "rediss"}://127.0.0.1:${port}`,
    kill,
    async restart() {
      child = await spawnRedis(port, dir, extra, options);
    },
    async stop() {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A Redis Cluster of `size` masters, slots spread over them (redis-cli --cluster create). With a
 * password, every node requires it of clients and of the other nodes (`requirepass`, `masterauth`).
 */
export async function startRedisCluster(size = 3, options: Pick<RedisOptions, "password"> = {}): Promise<{ urls: string[]; stop(): Promise<void> }> {
  const nodes = await Promise.all(
    Array.from({ length: size }, () => startRedis(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"], options)),
  );
  // redis-cli reads the password from the environment (with -a it warns about the command line).
  const env = { ...process.env, ...(options.password === undefined ? {} : { REDISCLI_AUTH: options.password }) };
  const created = spawnSync(cli ?? "redis-cli", ["--cluster", "create", ...nodes.map((node) => `127.0.0.1:${node.port}`), "--cluster-replicas", "0", "--cluster-yes"], {
    encoding: "utf8",
    env,
  });
  if (created.status !== 0) throw new Error(`redis-cli --cluster create failed: ${created.stdout}${created.stderr}`);
  for (let attempt = 0; attempt < 200; attempt++) {
    const info = spawnSync(cli ?? "redis-cli", ["-p", String(nodes[0]?.port), "cluster", "info"], { encoding: "utf8", env });
    if (info.stdout.includes("cluster_state:ok")) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    urls: nodes.map((node) => node.url),
    stop: async () => {
      await Promise.all(nodes.map((node) => node.stop()));
    },
  };
}
