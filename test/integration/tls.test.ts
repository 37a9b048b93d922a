import { X509Certificate } from "node:crypto";
import { mkdirSync, renameSync, symlinkSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { credentials, status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ChannelTls, EnvoyExtProcClient } from "../envoy/ext-proc-client.js";
import { TestCertificates, type Issued } from "../support/certificates.js";
import { healthStatus } from "../support/health.js";
import { idle, LogCapture, startTestSidecar, totalLoad } from "../support/sidecar.js";
import { chat, chatRequest } from "./harness.js";
import { sseEngine } from "../support/upstreams.js";

const pools = [{ name: "llama", models: ["llama"], endpoints: ["127.0.0.1:1"] }];
/** The server name the deploy/ Envoy configs send and check (the test server certificates carry it). */
const SNI = "metadata-center";

const quick = sseEngine();

let certificates: TestCertificates;
let ca: Issued;
let server: Issued;
let envoy: Issued;
let otherCa: Issued;
let stranger: Issued;
beforeAll(() => {
  certificates = new TestCertificates();
  ca = certificates.ca("sidecar-ca");
  server = certificates.issue(ca, "server", "server");
  envoy = certificates.issue(ca, "envoy", "client");
  otherCa = certificates.ca("other-ca");
  stranger = certificates.issue(otherCa, "stranger", "client");
});
afterAll(() => certificates.remove());

type Sidecar = Awaited<ReturnType<typeof startTestSidecar>>;

/** Envoy's cluster to the sidecar over TLS: trusts `trusted`, presents `client` if given. */
const tlsTo = (trusted: Issued, client?: Issued): ChannelTls => ({ ca: trusted.cert, cert: client?.cert, key: client?.key, servername: SNI });

/** One exchange through the Envoy-faithful client on a connection of its own. */
async function exchangeOver(sidecar: Sidecar, tls: ChannelTls | undefined) {
  const client = new EnvoyExtProcClient(`127.0.0.1:${sidecar.ports.extproc}`, { tls });
  try {
    return await client.exchange({ request: chatRequest(chat("llama", "over tls", { stream: true })), upstream: quick });
  } finally {
    client.close();
  }
}

async function expectRefused(sidecar: Sidecar, tls: ChannelTls | undefined): Promise<void> {
  const result = await exchangeOver(sidecar, tls);
  expect(result.stream.serverStatus?.code).toBe(status.UNAVAILABLE);
  expect(result.failure?.kind).toBe("grpc-error");
  expect(result.upstreamRequest).toBeUndefined();
  expect(await totalLoad(sidecar)).toEqual(idle);
}

/** Bytes a plaintext HTTP/2 client gets back from the port before it is closed. */
function plaintextAnswer(port: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect(port, "127.0.0.1", () => socket.write("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("close", () => resolve(Buffer.concat(chunks)));
    socket.on("error", reject);
    socket.setTimeout(5000, () => reject(new Error("the port kept a plaintext client waiting")));
  });
}

describe("ext_proc over TLS", () => {
  let sidecar: Sidecar;
  beforeAll(async () => {
    sidecar = await startTestSidecar(pools, { extproc: { port: 0, tls: { certFile: server.certFile, keyFile: server.keyFile } } });
  });
  afterAll(() => sidecar.stop(0));

  it("completes an exchange for a client trusting the CA, health included", async () => {
    const result = await exchangeOver(sidecar, tlsTo(ca));
    expect(result.failure).toBeUndefined();
    expect(result.status).toBe(200);
    expect(result.body.toString()).toContain("[DONE]");
    expect(await healthStatus(sidecar.ports.extproc, "readiness", { credentials: credentials.createSsl(ca.cert), sni: SNI })).toBe("SERVING");
    // The health port stays plaintext: the kubelet's gRPC probes do not speak TLS.
    expect(await healthStatus(sidecar.ports.health, "readiness")).toBe("SERVING");
    await expect.poll(() => totalLoad(sidecar)).toEqual(idle);
  });

  it("retires a TLS connection without losing a stream: 2,000 exchanges opened at once on it are all routed", async () => {
    const capture = new LogCapture();
    const own = await startTestSidecar(pools, { extproc: { port: 0, tls: { certFile: server.certFile, keyFile: server.keyFile } } }, capture);
    const client = new EnvoyExtProcClient(`127.0.0.1:${own.ports.extproc}`, { tls: tlsTo(ca) });
    try {
      const results = await Promise.all(
        Array.from({ length: 2000 }, () => client.exchange({ request: chatRequest(chat("llama", "at once", { stream: true })), upstream: quick, timeoutMs: 60_000 })),
      );
      expect(results.filter((result) => result.failure !== undefined).map((result) => JSON.stringify(result.failure)).slice(0, 3)).toEqual([]);
      expect(results.filter((result) => result.routedTo !== undefined)).toHaveLength(2000);
      // Retired with the notice written between frames, not nghttp2's GOAWAY (see connection-rotation.ts).
      expect(capture.lines.filter((line) => line["level"] === 40).map((line) => line["msg"])).toEqual([]);
      await expect.poll(() => totalLoad(own)).toEqual(idle);
    } finally {
      client.close();
      await own.stop(0);
    }
  }, 60_000);

  it("gives a plaintext client nothing: the stream never opens, a raw HTTP/2 preface gets at most a TLS alert", async () => {
    await expectRefused(sidecar, undefined);
    const answer = await plaintextAnswer(sidecar.ports.extproc);
    // 0x15: a TLS alert record; never an HTTP/2 frame.
    if (answer.length > 0) expect(answer[0]).toBe(0x15);
  });

  it("is refused by a client that does not trust the certificate's CA", async () => {
    await expectRefused(sidecar, tlsTo(otherCa));
  });
});

describe("ext_proc over mTLS", () => {
  let sidecar: Sidecar;
  beforeAll(async () => {
    sidecar = await startTestSidecar(pools, {
      extproc: { port: 0, tls: { certFile: server.certFile, keyFile: server.keyFile, clientCaFile: ca.certFile } },
    });
  });
  afterAll(() => sidecar.stop(0));

  it("completes an exchange for a client presenting a certificate from the client CA", async () => {
    const result = await exchangeOver(sidecar, tlsTo(ca, envoy));
    expect(result.failure).toBeUndefined();
    expect(result.status).toBe(200);
    await expect.poll(() => totalLoad(sidecar)).toEqual(idle);
  });

  it("fails the handshake of a client without a certificate, or with one from another CA", async () => {
    await expectRefused(sidecar, tlsTo(ca));
    await expectRefused(sidecar, tlsTo(ca, stranger));
    expect(await healthStatus(sidecar.ports.extproc, "readiness", { credentials: credentials.createSsl(ca.cert), sni: SNI })).toMatch(/^error: 14 UNAVAILABLE/);
    await expectRefused(sidecar, undefined);
  });
});

describe("TLS files that cannot be used", () => {
  it("stop the sidecar at start, naming the field and the file", async () => {
    const start = (tls: Record<string, string>) => startTestSidecar(pools, { extproc: { port: 0, tls } });
    const garbage = join(certificates.dir, "garbage.pem");
    writeFileSync(garbage, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    await expect(start({ certFile: server.certFile, keyFile: envoy.keyFile })).rejects.toThrow(
      `extproc.tls.keyFile: ${envoy.keyFile} is not the key of the certificate in extproc.tls.certFile (${server.certFile})`,
    );
    await expect(start({ certFile: server.certFile, keyFile: server.certFile })).rejects.toThrow(
      `extproc.tls.keyFile: ${server.certFile} is not a PEM private key`,
    );
    await expect(start({ certFile: server.certFile, keyFile: server.keyFile, clientCaFile: garbage })).rejects.toThrow(
      `extproc.tls.clientCaFile: certificate 1 in ${garbage} does not parse`,
    );
    await expect(start({ certFile: server.certFile, keyFile: server.keyFile, clientCaFile: server.keyFile })).rejects.toThrow(
      `extproc.tls.clientCaFile: ${server.keyFile} holds no PEM certificate`,
    );
  });
});

describe("certificate files changing under a running sidecar", () => {
  const fingerprint = (issued: Issued): string => new X509Certificate(issued.cert).fingerprint256;

  /** The fingerprint of the certificate a new connection is served, or the error of its health check. */
  async function served(sidecar: Sidecar, trusted: Issued, client?: Issued): Promise<string> {
    let seen = "none";
    const channel = credentials.createSsl(trusted.cert, client?.key, client?.cert, {
      checkServerIdentity: (_host, certificate) => {
        seen = certificate.fingerprint256;
        return undefined;
      },
    });
    const health = await healthStatus(sidecar.ports.extproc, "readiness", { credentials: channel, sni: SNI });
    return health === "SERVING" ? seen : health;
  }

  it("serves a rotated certificate; a change that cannot be loaded keeps the previous one and says why", async () => {
    const dir = join(certificates.dir, "plain");
    mkdirSync(dir);
    const files = { certFile: join(dir, "tls.crt"), keyFile: join(dir, "tls.key") };
    writeFileSync(files.certFile, server.cert);
    writeFileSync(files.keyFile, server.key);
    const capture = new LogCapture();
    const sidecar = await startTestSidecar(pools, { extproc: { port: 0, tls: files } }, capture);
    try {
      expect(await served(sidecar, ca)).toBe(fingerprint(server));
      const next = certificates.issue(ca, "server-2", "server");

      // File by file: the certificate first, its key later.
      writeFileSync(files.certFile, next.cert);
      const rejected = "ext_proc TLS files changed but cannot be loaded; serving the previous certificate";
      await expect.poll(() => capture.withMessage(rejected).length, { timeout: 5000 }).toBe(1);
      expect(capture.withMessage(rejected)[0]?.["reason"]).toBe(
        `extproc.tls.keyFile: ${files.keyFile} is not the key of the certificate in extproc.tls.certFile (${files.certFile})`,
      );
      expect(await served(sidecar, ca)).toBe(fingerprint(server));
      writeFileSync(files.keyFile, next.key);
      await expect.poll(() => served(sidecar, ca), { timeout: 5000 }).toBe(fingerprint(next));
      expect(capture.withMessage("ext_proc TLS certificate reloaded")).toHaveLength(1);

      // Not a certificate at all.
      writeFileSync(files.certFile, "not a certificate\n");
      await expect.poll(() => capture.withMessage(rejected).length, { timeout: 5000 }).toBe(2);
      expect(capture.withMessage(rejected)[1]?.["reason"]).toBe(`extproc.tls.certFile: ${files.certFile} holds no PEM certificate`);
      expect(await served(sidecar, ca)).toBe(fingerprint(next));
      const result = await exchangeOver(sidecar, tlsTo(ca));
      expect(result.status).toBe(200);
      await expect.poll(() => totalLoad(sidecar)).toEqual(idle);
    } finally {
      await sidecar.stop(0);
    }
  });

  it("follows a Kubernetes Secret update (a symlinked folder swapped at once), client CA included", async () => {
    // The kubelet's layout: tls.crt -> ..data/tls.crt, ..data -> ..<version>; an update writes a
    // new version folder and renames a new ..data link over the old one.
    const dir = join(certificates.dir, "secret");
    mkdirSync(dir);
    const version = (name: string, pair: Issued, clientCa: Issued): void => {
      mkdirSync(join(dir, name));
      writeFileSync(join(dir, name, "tls.crt"), pair.cert);
      writeFileSync(join(dir, name, "tls.key"), pair.key);
      writeFileSync(join(dir, name, "ca.crt"), clientCa.cert);
      symlinkSync(name, join(dir, "..data_tmp"));
      renameSync(join(dir, "..data_tmp"), join(dir, "..data"));
    };
    version("..v1", server, ca);
    for (const name of ["tls.crt", "tls.key", "ca.crt"]) symlinkSync(join("..data", name), join(dir, name));
    const tls = { certFile: join(dir, "tls.crt"), keyFile: join(dir, "tls.key"), clientCaFile: join(dir, "ca.crt") };
    const sidecar = await startTestSidecar(pools, { extproc: { port: 0, tls } });
    try {
      expect(await served(sidecar, ca, envoy)).toBe(fingerprint(server));
      expect(await served(sidecar, ca, stranger)).toMatch(/^error: 14 UNAVAILABLE/);

      const next = certificates.issue(ca, "server-3", "server");
      version("..v2", next, otherCa);
      await expect.poll(() => served(sidecar, ca, stranger), { timeout: 5000 }).toBe(fingerprint(next));
      expect(await served(sidecar, ca, envoy)).toMatch(/^error: 14 UNAVAILABLE/);
      const result = await exchangeOver(sidecar, tlsTo(ca, stranger));
      expect(result.status).toBe(200);
      await expect.poll(() => totalLoad(sidecar)).toEqual(idle);
    } finally {
      await sidecar.stop(0);
    }
  });
});
