import { spawn, type ChildProcess } from "node:child_process";
import { createSocket } from "node:dgram";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
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

/** A loopback port free for UDP and for TCP (dnsmasq listens on both) at the time of asking. */
async function freeDnsPort(): Promise<number> {
  const socket = createSocket("udp4");
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  const { port } = socket.address();
  const tcp = createServer();
  const tcpFree = await new Promise<boolean>((resolve) => {
    tcp.once("error", () => resolve(false));
    tcp.listen(port, "127.0.0.1", () => resolve(true));
  });
  if (tcpFree) await new Promise((resolve) => tcp.close(resolve));
  await new Promise<void>((resolve) => socket.close(resolve));
  return tcpFree ? port : freeDnsPort();
}

const binary = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"].find((path) => existsSync(path)) ?? "dnsmasq";

/**
 * Starts dnsmasq on a free port. Tests running beside it open and close ports all the time, so
 * the port can be taken between asking and binding: then it tries another.
 */
export async function startDnsmasq(lines: string[], attempts = 5): Promise<DnsServer> {
  try {
    return await startDnsmasqOnce(lines);
  } catch (error) {
    if (attempts <= 1 || !String((error as Error).message).includes("Address already in use")) throw error;
    return startDnsmasq(lines, attempts - 1);
  }
}

async function startDnsmasqOnce(lines: string[]): Promise<DnsServer> {
  const dir = mkdtempSync(join(tmpdir(), "mc-dns-"));
  const hosts = join(dir, "hosts");
  writeFileSync(hosts, `${lines.join("\n")}\n`);
  const port = await freeDnsPort();
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
  const exited = (): boolean => child.exitCode !== null || child.signalCode !== null;
  try {
    await new Promise<void>((resolve, reject) => {
      child.once("error", reject);
      child.once("exit", (code) => reject(new Error(`dnsmasq exited with ${code}: ${stderr}`)));
      // dnsmasq logs "read <file>" once it listens and has read the records.
      const check = (): void => {
        if (stderr.includes(`read ${hosts}`)) resolve();
        else if (!exited()) setTimeout(check, 20);
      };
      check();
    });
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
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
      if (!exited()) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGTERM");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
