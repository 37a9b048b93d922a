import { spawn, type ChildProcess } from "node:child_process";
import { createSocket } from "node:dgram";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A real DNS server on loopback (Debian's dnsmasq, installed by .ci/run) serving a hosts file. */
export interface DnsServer {
  /** `127.0.0.1:port`, for node:dns `setServers`. */
  address: string;
  /** Replaces the served records (hosts-file lines) and makes dnsmasq reread them. */
  setRecords(lines: string[]): Promise<void>;
  stop(): Promise<void>;
}

async function freeUdpPort(): Promise<number> {
  const socket = createSocket("udp4");
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(resolve));
  return port;
}

const binary = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"].find((path) => existsSync(path)) ?? "dnsmasq";

export async function startDnsmasq(lines: string[]): Promise<DnsServer> {
  const dir = mkdtempSync(join(tmpdir(), "mc-dns-"));
  const hosts = join(dir, "hosts");
  writeFileSync(hosts, `${lines.join("\n")}\n`);
  const port = await freeUdpPort();
  const child: ChildProcess = spawn(
    binary,
    [
      "--no-daemon",
      `--port=${port}`,
      "--listen-address=127.0.0.1",
      "--bind-interfaces",
      "--no-resolv",
      "--no-hosts",
      `--addn-hosts=${hosts}`,
      "--pid-file=",
      // As root dnsmasq would drop to `nobody`, who cannot reread a hosts file in a private temp dir.
      ...(process.getuid?.() === 0 ? ["--user=root"] : []),
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
  await new Promise<void>((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`dnsmasq exited with ${code}: ${stderr}`)));
    // dnsmasq logs "read <file>" once it listens and has read the records.
    const check = (): void => {
      if (stderr.includes(`read ${hosts}`)) resolve();
      else setTimeout(check, 20);
    };
    check();
  });
  return {
    address: `127.0.0.1:${port}`,
    async setRecords(next) {
      const before = (stderr.match(/read /g) ?? []).length;
      writeFileSync(hosts, `${next.join("\n")}\n`);
      child.kill("SIGHUP");
      // It logs "read <file> - N names" after each reread.
      while ((stderr.match(/read /g) ?? []).length <= before) await new Promise((resolve) => setTimeout(resolve, 20));
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGTERM");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
