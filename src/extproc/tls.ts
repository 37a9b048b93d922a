import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createSecureContext, createServer, type Server, type TLSSocket } from "node:tls";
import { watchFolders, type FolderWatch } from "../file-watch.js";
import type { Logger } from "../log.js";

/** PEM files for ext_proc over TLS (config `extproc.tls`). */
export interface TlsFiles {
  /** The server's certificate, optionally followed by its intermediates. */
  certFile: string;
  keyFile: string;
  /** With it, only clients presenting a certificate this CA signed complete the handshake (mTLS). */
  clientCaFile?: string | undefined;
}

type TlsField = keyof TlsFiles;

/** A TLS file that cannot be used; the message names the config field and the file. */
export class TlsFileError extends Error {
  override readonly name = "TlsFileError";
}

interface Material {
  certificate: Buffer;
  privateKey: Buffer;
  clientCa: Buffer | undefined;
  leaf: X509Certificate;
}

const fieldOf = (field: TlsField): string => `extproc.tls.${field}`;

async function read(files: TlsFiles, field: TlsField): Promise<Buffer> {
  const file = files[field] ?? "";
  try {
    return await readFile(file);
  } catch (error) {
    throw new TlsFileError(`${fieldOf(field)}: ${file} cannot be read: ${(error as Error).message}`);
  }
}

/** The first certificate in a PEM file, every one in it checked: OpenSSL itself would skip one that does not parse in a CA file. */
function firstCertificateIn(pem: Buffer, files: TlsFiles, field: TlsField): X509Certificate {
  const file = files[field] ?? "";
  const blocks = pem.toString("latin1").match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  const certificates = blocks.map((block, index) => {
    try {
      return new X509Certificate(block);
    } catch (error) {
      throw new TlsFileError(`${fieldOf(field)}: certificate ${index + 1} in ${file} does not parse: ${(error as Error).message}`);
    }
  });
  const [first] = certificates;
  if (first === undefined) throw new TlsFileError(`${fieldOf(field)}: ${file} holds no PEM certificate`);
  return first;
}

/** Reads the files and checks them together: each parses, and the key is the certificate's. */
async function load(files: TlsFiles): Promise<Material> {
  const [certificate, privateKey, clientCa] = await Promise.all([
    read(files, "certFile"),
    read(files, "keyFile"),
    files.clientCaFile === undefined ? undefined : read(files, "clientCaFile"),
  ]);
  const leaf = firstCertificateIn(certificate, files, "certFile");
  let key: KeyObject;
  try {
    key = createPrivateKey(privateKey);
  } catch (error) {
    throw new TlsFileError(`${fieldOf("keyFile")}: ${files.keyFile} is not a PEM private key: ${(error as Error).message}`);
  }
  if (!leaf.checkPrivateKey(key)) {
    throw new TlsFileError(`${fieldOf("keyFile")}: ${files.keyFile} is not the key of the certificate in ${fieldOf("certFile")} (${files.certFile})`);
  }
  if (clientCa !== undefined) firstCertificateIn(clientCa, files, "clientCaFile");
  try {
    createSecureContext({ cert: certificate, key: privateKey, ca: clientCa });
  } catch (error) {
    throw new TlsFileError(`extproc.tls: ${files.certFile} and ${files.keyFile} cannot serve TLS: ${(error as Error).message}`);
  }
  return { certificate, privateKey, clientCa, leaf };
}

const sameMaterial = (a: Material, b: Material): boolean =>
  a.certificate.equals(b.certificate) &&
  a.privateKey.equals(b.privateKey) &&
  (a.clientCa === undefined ? b.clientCa === undefined : b.clientCa !== undefined && a.clientCa.equals(b.clientCa));

const described = (material: Material) => ({
  subject: material.leaf.subject,
  validTo: material.leaf.validTo,
  fingerprint256: material.leaf.fingerprint256,
});

/**
 * The server's certificate, key and client CA, read again whenever their files change. A change
 * that cannot be loaded (a file missing or unparsable, a key not matching the certificate, as
 * between the writes of a rotation done file by file) keeps serving what was loaded and logs why.
 * Connections already open keep the certificate they were opened with.
 */
class ReloadingCertificates {
  private readonly watch: FolderWatch;
  /** Reloads one after another, so an older read never replaces a newer one. */
  private reloading = Promise.resolve();

  constructor(
    private readonly files: TlsFiles,
    private material: Material,
    private readonly log: Logger,
    debounceMs: number,
    private readonly changed: (material: Material) => void,
  ) {
    const watched = [files.certFile, files.keyFile, ...(files.clientCaFile === undefined ? [] : [files.clientCaFile])];
    const reload = (): void => {
      this.reloading = this.reloading
        .then(() => this.reload())
        .catch((error: unknown) => this.log.error({ err: error }, "ext_proc TLS reload failed; serving the previous certificate"));
    };
    this.watch = watchFolders(watched, reload, debounceMs);
  }

  private async reload(): Promise<void> {
    let next: Material;
    try {
      next = await load(this.files);
    } catch (error) {
      this.log.error(
        { reason: (error as Error).message, serving: described(this.material) },
        "ext_proc TLS files changed but cannot be loaded; serving the previous certificate",
      );
      return;
    }
    if (sameMaterial(next, this.material)) return;
    this.material = next;
    this.changed(next);
    this.log.info(described(next), "ext_proc TLS certificate reloaded");
  }

  close(): void {
    this.watch.close();
  }
}

const contextOf = (material: Material) => ({ cert: material.certificate, key: material.privateKey, ca: material.clientCa });

/**
 * Terminates TLS for the ext_proc port and hands each connection that negotiated HTTP/2 over.
 * Done here rather than by grpc-js so that the connection's bytes pass through JavaScript on their
 * way to nghttp2: the shutdown notice of connection-rotation.ts can then be written between frames
 * (Node's TLS socket takes only one write at a time, and nghttp2 writes to it directly).
 */
export class TlsListener {
  private readonly server: Server;
  private readonly certificates: ReloadingCertificates;

  constructor(files: TlsFiles, material: Material, log: Logger, debounceMs: number) {
    const mutual = files.clientCaFile !== undefined;
    // Without a client CA no certificate is asked for; with one, a client without a good one gets no connection.
    this.server = createServer({ ...contextOf(material), requestCert: mutual, rejectUnauthorized: mutual, ALPNProtocols: ["h2"] });
    this.certificates = new ReloadingCertificates(files, material, log, debounceMs, (next) => this.server.setSecureContext(contextOf(next)));
  }

  /** Listens; resolves with the port once bound. */
  listen(host: string, port: number, onConnection: (socket: TLSSocket) => void): Promise<number> {
    this.server.on("secureConnection", (socket) => {
      if (socket.alpnProtocol === "h2") onConnection(socket);
      else socket.destroy();
    });
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, host, () => {
        this.server.off("error", reject);
        const address = this.server.address();
        resolve(typeof address === "object" && address !== null ? address.port : port);
      });
    });
  }

  /** Takes no more connections; those open stay until their sessions close. */
  stop(): void {
    if (this.server.listening) this.server.close();
  }

  close(): void {
    this.stop();
    this.certificates.close();
  }
}

/** How the ext_proc port is served: plaintext by grpc-js, or TLS by a TlsListener whose files are watched until `close`. */
export interface ExtProcTransport {
  readonly tls: TlsListener | undefined;
  close(): void;
}

/** Loads the TLS files (throwing TlsFileError for one that cannot be used), or plaintext without them. */
export async function extProcTransport(files: TlsFiles | undefined, log: Logger, debounceMs = 100): Promise<ExtProcTransport> {
  if (files === undefined) return { tls: undefined, close: () => undefined };
  const material = await load(files);
  const listener = new TlsListener(files, material, log, debounceMs);
  log.info({ ...described(material), clientCertificates: files.clientCaFile === undefined ? "not asked for" : "required" }, "ext_proc TLS certificate loaded");
  return { tls: listener, close: () => listener.close() };
}
