import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A certificate and its key, as files and as PEM. */
export interface Issued {
  certFile: string;
  keyFile: string;
  cert: Buffer;
  key: Buffer;
}

const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

const openssl = (args: string[]): void => {
  execFileSync("openssl", args, { stdio: "pipe" });
};

const issued = (certFile: string, keyFile: string): Issued => ({ certFile, keyFile, cert: readFileSync(certFile), key: readFileSync(keyFile) });

/**
 * Certificates made with openssl for a test, in a temp folder `remove` deletes. Server
 * certificates are for 127.0.0.1 and `metadata-center` (the SNI the deploy/ Envoy configs send).
 */
export class TestCertificates {
  readonly dir = mkdtempSync(join(tmpdir(), "mc-tls-"));

  /** A self-signed CA named `name`. */
  ca(name: string): Issued {
    const base = join(this.dir, name);
    openssl(["req", "-x509", "-new", ...EC_KEY, "-keyout", `${base}.key`, "-out", `${base}.crt`, "-days", "2", "-subj", `/CN=${name}`]);
    return issued(`${base}.crt`, `${base}.key`);
  }

  /** A certificate `ca` signed for a server or a client, with a serial of its own. */
  issue(ca: Issued, name: string, usage: "server" | "client"): Issued {
    const base = join(this.dir, name);
    const extensions = [
      "basicConstraints=critical,CA:FALSE",
      usage === "server" ? "extendedKeyUsage=serverAuth" : "extendedKeyUsage=clientAuth",
      ...(usage === "server" ? ["subjectAltName=DNS:metadata-center,IP:127.0.0.1"] : []),
    ];
    writeFileSync(`${base}.ext`, `${extensions.join("\n")}\n`);
    openssl(["req", "-new", ...EC_KEY, "-keyout", `${base}.key`, "-out", `${base}.csr`, "-subj", `/CN=${name}`]);
    openssl([
      "x509", "-req", "-in", `${base}.csr`, "-CA", ca.certFile, "-CAkey", ca.keyFile,
      "-set_serial", `0x${randomBytes(8).toString("hex")}`, "-days", "2", "-extfile", `${base}.ext`, "-out", `${base}.crt`,
    ]);
    return issued(`${base}.crt`, `${base}.key`);
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
