// What the deploy tests share: the sidecar's config as a pod runs it, and where a pod's
// containers find the files of a Secret.
import { readFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseConfig, type Override } from "../../src/config/load.js";
import type { Config } from "../../src/config/schema.js";

export const root = new URL("../..", import.meta.url).pathname;
export const read = (path: string): string => readFileSync(join(root, path), "utf8");

/** The Secret holding both sides' certificates, as the README's command creates it. */
export const TLS_SECRET = "metadata-center-tls";

/** The keys of the Secret the README's one command creates (`--from-file=[key=]path`). */
export function readmeSecretKeys(): string[] {
  const command = new RegExp(`kubectl -n inference create secret generic ${TLS_SECRET}((?: --from-file=[^\\s\`]+)+)`).exec(read("README.md"));
  if (command === null) throw new Error(`the README has no command creating the Secret ${TLS_SECRET}`);
  return [...(command[1] ?? "").matchAll(/--from-file=(?:([^=\s]+)=)?(\S+)/g)].map(([, key, path]) => key ?? basename(path ?? ""));
}

/**
 * The sidecar's config from a manifest folder, validated as the pod runs it: the HTTP token comes
 * from its Secret in the environment, and the TLS files, which exist only in the pod, stand in
 * for by a file that exists here (where they are mounted is checked with secretKeyAt).
 */
export function sidecarConfig(path: string): Config {
  return parseSidecarConfig(read(path), basename(path));
}

/** As sidecarConfig, for a config's text (one a pod writes, e.g.); `tls: false` for a config without extproc.tls. */
export function parseSidecarConfig(text: string, file: string, { tls = true }: { tls?: boolean } = {}): Config {
  const here = fileURLToPath(import.meta.url);
  const overrides: Override[] = [
    { path: ["http", "token"], value: "a-token-from-the-secret-0123456789", source: "env METADATA_CENTER_HTTP_TOKEN", numeric: false },
    ...(tls ? (["certFile", "keyFile", "clientCaFile"] as const) : []).map((field) => ({
      path: ["extproc", "tls", field],
      value: here,
      source: `the Secret ${TLS_SECRET}, mounted in the pod`,
      numeric: false,
    })),
  ];
  return parseConfig(text, file, overrides);
}

export interface Container {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: Array<{ name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string; optional?: boolean } } }>;
  ports?: Array<{ name?: string; containerPort: number }>;
  volumeMounts?: Array<{ name: string; mountPath: string; readOnly?: boolean; subPath?: string }>;
}

export interface PodSpec {
  initContainers?: Container[];
  containers: Container[];
  volumes: Array<{
    name: string;
    configMap?: { name: string };
    secret?: { secretName: string; items?: Array<{ key: string; path: string }> };
    emptyDir?: { medium?: string; sizeLimit?: string };
  }>;
}

/** A container of the pod, init containers included. */
export const containerOf = (pod: PodSpec, name: string): Container | undefined =>
  [...(pod.initContainers ?? []), ...pod.containers].find((candidate) => candidate.name === name);

/** The pod's volume a container sees `path` in, through a mount of its folder. */
export function volumeAt(pod: PodSpec, container: string, path: string): PodSpec["volumes"][number] | undefined {
  const mount = containerOf(pod, container)?.volumeMounts?.find((candidate) => candidate.mountPath === dirname(path));
  return pod.volumes.find((volume) => volume.name === mount?.name);
}

/**
 * Which Secret key a container reads at `path`: through a mount of the whole folder (a subPath
 * mount would never see the Secret's updates) of a Secret volume listing that file. Undefined
 * when no mount provides it.
 */
export function secretKeyAt(pod: PodSpec, container: string, path: string): { secret: string; key: string } | undefined {
  const mounts = containerOf(pod, container)?.volumeMounts ?? [];
  const mount = mounts.find((candidate) => candidate.mountPath === dirname(path) && candidate.subPath === undefined);
  const secret = pod.volumes.find((volume) => volume.name === mount?.name)?.secret;
  const item = secret?.items?.find((candidate) => candidate.path === basename(path));
  return secret === undefined || item === undefined ? undefined : { secret: secret.secretName, key: item.key };
}

/** The ConfigMap a container sees `path` in, through a mount of its folder. */
export function configMapAt(pod: PodSpec, container: string, path: string): string | undefined {
  return volumeAt(pod, container, path)?.configMap?.name;
}
