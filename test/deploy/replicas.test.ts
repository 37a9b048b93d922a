import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import type { Config } from "../../src/config/schema.js";
import { containerOf, parseSidecarConfig, read, sidecarConfig, volumeAt, type Container, type PodSpec } from "./manifests.js";

// The replicas variants: N Envoy + metadata-center pairs sharing one Redis (load.store: redis),
// in Kubernetes (deploy/k8s/replicas, and its overlay valkey/ with a Redis of its own) and in
// Compose (deploy/compose.replicas.yaml). k8s-schema.test.ts validates their objects against the
// Kubernetes schemas, artifacts.test.ts the TLS wiring and the compose files; here, how the
// sidecars find Redis, with their configs parsed by the real parser.

const dir = "deploy/k8s/replicas";

interface Workload {
  metadata: { name: string; labels?: Record<string, string> };
  spec: {
    replicas?: number;
    serviceName?: string;
    selector: { matchLabels: Record<string, string> };
    volumeClaimTemplates?: unknown[];
    template: { metadata?: { labels?: Record<string, string> }; spec: PodSpec };
  };
}
interface Kustomization {
  labels?: Array<{ pairs: Record<string, string> }>;
  resources: string[];
  configMapGenerator?: Array<{ name: string; files: string[] }>;
  secretGenerator?: Array<{ name: string; literals: string[] }>;
}

const deployment = parse(read(`${dir}/deployment.yaml`)) as Workload;
const pod = deployment.spec.template.spec;
const kustomization = parse(read(`${dir}/kustomization.yaml`)) as Kustomization;
const init = pod.initContainers?.[0] as Container;
const sidecar = containerOf(pod, "metadata-center") as Container;
/** The config the sidecar is started with (--config). */
const configPath = (sidecar.args ?? [])[(sidecar.args ?? []).indexOf("--config") + 1] ?? "";

/**
 * Runs the init container's script as the pod does (node -e with its args), the ConfigMap's file
 * at the template path and the emptyDir's folder in a temporary folder, with REDIS_URL as the
 * Secret's key url gives it (undefined: no such variable).
 */
function render(url: string | undefined, template = read(`${dir}/metadata-center.yaml`)): { status: number | null; stderr: string; text: string | undefined } {
  const [node, flag, script] = init.command ?? [];
  expect([node, flag]).toEqual(["node", "-e"]);
  const [templatePath, renderedPath] = init.args ?? [];
  const folder = mkdtempSync(join(tmpdir(), "mc-redis-url-"));
  try {
    const templateFile = join(folder, `template-${basename(templatePath ?? "")}`);
    const renderedFile = join(folder, basename(renderedPath ?? ""));
    writeFileSync(templateFile, template);
    const result = spawnSync(process.execPath, ["-e", script ?? "", templateFile, renderedFile], {
      env: url === undefined ? {} : { REDIS_URL: url },
      encoding: "utf8",
    });
    let text: string | undefined;
    try {
      text = readFileSync(renderedFile, "utf8");
    } catch {
      text = undefined;
    }
    return { status: result.status, stderr: result.stderr, text };
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }
}

/** The sidecar's config as the pod starts it, for a Secret whose key url is `url`. */
function podConfig(url: string): Config {
  const { status, stderr, text } = render(url);
  expect(stderr).toBe("");
  expect(status).toBe(0);
  return parseSidecarConfig(text ?? "", basename(configPath));
}

describe("deploy/k8s/replicas", () => {
  it("runs three pods whose sidecars share one Redis, and its budget keeps two through a drain", () => {
    expect(deployment.spec.replicas).toBe(3);
    const budget = parse(read(`${dir}/pdb.yaml`)) as { spec: { minAvailable: number } };
    expect(budget.spec.minAvailable).toBe(2);
    expect(podConfig("redis://redis.example:6379").load.store).toBe("redis");
  });

  it("is deploy/k8s/deployment.yaml but for the replicas, the init container writing the Redis URL, the password and the config's emptyDir", () => {
    const single = parse(read("deploy/k8s/deployment.yaml")) as Workload;
    const replicas = parse(read(`${dir}/deployment.yaml`)) as Workload;
    const spec = replicas.spec.template.spec;
    expect(replicas.spec.replicas).toBe(3);
    replicas.spec.replicas = single.spec.replicas;
    expect(spec.initContainers?.map((container) => container.name)).toEqual(["redis-url"]);
    delete spec.initContainers;
    const replicaSidecar = containerOf(spec, "metadata-center");
    expect(replicaSidecar?.env?.map((variable) => variable.name)).toEqual(["METADATA_CENTER_HTTP_TOKEN", "METADATA_CENTER_REDIS_PASSWORD"]);
    replicaSidecar?.env?.pop();
    const configMount = replicaSidecar?.volumeMounts?.find((mount) => mount.name === "metadata-center-config");
    expect(configMount?.readOnly).toBe(true);
    delete configMount?.readOnly;
    const configVolume = spec.volumes.find((volume) => volume.name === "metadata-center-config");
    expect(configVolume).toEqual({ name: "metadata-center-config", emptyDir: { medium: "Memory", sizeLimit: "1Mi" } });
    const template = spec.volumes.find((volume) => volume.name === "metadata-center-config-template");
    spec.volumes = spec.volumes.filter((volume) => volume !== template).map((volume) => (volume === configVolume ? { name: volume.name, configMap: template?.configMap } : volume)) as PodSpec["volumes"];
    expect(replicas).toEqual(single);
  });

  it("reads the template from the generated ConfigMap, and writes the config where the sidecar reads --config, in memory", () => {
    const [templatePath, renderedPath] = init.args ?? [];
    const configMap = volumeAt(pod, init.name, templatePath ?? "")?.configMap?.name;
    const generator = kustomization.configMapGenerator?.find((candidate) => candidate.name === configMap);
    expect(generator?.files).toEqual([basename(templatePath ?? "")]);
    expect(renderedPath).toBe(configPath);
    const written = volumeAt(pod, init.name, renderedPath ?? "");
    expect(written?.emptyDir?.medium).toBe("Memory");
    expect(volumeAt(pod, sidecar.name, configPath)).toBe(written);
    // The sidecar sees the written file only: not the template, nor a writable folder.
    expect(volumeAt(pod, sidecar.name, templatePath ?? "")).toBeUndefined();
    expect(sidecar.volumeMounts?.find((mount) => mount.mountPath === dirname(configPath))?.readOnly).toBe(true);
  });

  it("takes the URL from the Secret metadata-center-redis (required), and the password from it when there is one", () => {
    expect(init.env).toEqual([{ name: "REDIS_URL", valueFrom: { secretKeyRef: { name: "metadata-center-redis", key: "url" } } }]);
    expect(sidecar.env?.find((variable) => variable.name === "METADATA_CENTER_REDIS_PASSWORD")?.valueFrom).toEqual({
      secretKeyRef: { name: "metadata-center-redis", key: "password", optional: true },
    });
    // The password is the variable the config schema names as the other way to give it.
    expect(read("src/config/schema.ts")).toContain("METADATA_CENTER_REDIS_PASSWORD");
  });

  it("runs deploy/k8s/metadata-center.yaml's config but for the store: Redis at the Secret's URL, parsed by the real parser", () => {
    const config = podConfig("rediss://:s3cret@redis.example.com:6380");
    const single = sidecarConfig("deploy/k8s/metadata-center.yaml");
    expect({ ...config, load: single.load }).toEqual(single);
    expect(config.load).toEqual({
      ...single.load,
      store: "redis",
      redis: { url: "rediss://:s3cret@redis.example.com:6380", leaseSeconds: 10, timeoutMs: 50, keyPrefix: "metadata-center:" },
    });
  });

  it("writes several URLs, separated by commas, as a Redis Cluster's seed nodes; a trailing newline is not part of the URL", () => {
    expect(podConfig("redis://a:6379,redis://b:6379, redis://c:6379\n").load.redis.url).toEqual(["redis://a:6379", "redis://b:6379", "redis://c:6379"]);
    expect(podConfig("redis://one:6379\n").load.redis.url).toBe("redis://one:6379");
    // Characters YAML reads otherwise survive: the URL is written as a JSON string.
    expect(podConfig(`redis://:it's"a:b{c}&*d@host:6379`).load.redis.url).toBe(`redis://:it's"a:b{c}&*d@host:6379`);
    expect(podConfig("rediss://:p%40ss%23word@host:6379").load.redis.url).toBe("rediss://:p%40ss%23word@host:6379");
  });

  it("stops the pod at its init container when the Secret's url is empty, and the sidecar refuses one that is not redis://", () => {
    for (const url of [undefined, "", " \n"]) {
      const { status, stderr, text } = render(url);
      expect(status).toBe(1);
      expect(stderr).toMatch(/REDIS_URL is empty: give the Secret metadata-center-redis the Redis URL under the key url/);
      expect(text).toBeUndefined();
    }
    const { text } = render("http://redis.example:6379");
    expect(() => parseSidecarConfig(text ?? "", "metadata-center.yaml")).toThrow(/load\.redis\.url: is not a redis:\/\/ or rediss:\/\/ URL/);
  });

  it("fails on a template without the placeholder, and the parser refuses the template as it is and a misspelt key", () => {
    const template = read(`${dir}/metadata-center.yaml`);
    expect(render("redis://x:6379", template.replace("${REDIS_URL}", "redis://x:6379"))).toMatchObject({ status: 1, text: undefined });
    expect(() => parseSidecarConfig(template, "metadata-center.yaml")).toThrow(/load\.redis\.url: is not a redis:\/\/ or rediss:\/\/ URL/);
    const misspelt = render("redis://x:6379", template.replace("  store: redis", "  stor: redis")).text ?? "";
    expect(() => parseSidecarConfig(misspelt, "metadata-center.yaml")).toThrow(/Unrecognized key: "stor"/);
  });
});

describe("deploy/k8s/replicas/valkey", () => {
  const overlay = `${dir}/valkey`;
  const overlayKustomization = parse(read(`${overlay}/kustomization.yaml`)) as Kustomization;
  const objects = parseAllDocuments(read(`${overlay}/valkey.yaml`)).map((document) => document.toJS() as { kind: string });
  const byKind = <T>(kind: string): T => objects.find((object) => object.kind === kind) as T;
  const statefulSet = byKind<Workload>("StatefulSet");
  const service = byKind<{ metadata: { name: string }; spec: { clusterIP: string; selector: Record<string, string>; ports: Array<{ port: number; targetPort: string }> } }>("Service");
  const policy = byKind<{
    spec: { podSelector: { matchLabels: Record<string, string> }; policyTypes: string[]; ingress: Array<{ from: Array<{ podSelector: { matchLabels: Record<string, string> } }>; ports: Array<{ port: number }> }> };
  }>("NetworkPolicy");
  const valkey = statefulSet.spec.template.spec.containers[0] as Container;
  const secretUrl = (): string => {
    const generator = overlayKustomization.secretGenerator?.find((candidate) => candidate.name === "metadata-center-redis");
    const literal = generator?.literals.find((candidate) => candidate.startsWith("url="));
    return literal?.slice("url=".length) ?? "";
  };

  it("is deploy/k8s/replicas with one Valkey pod and the Secret metadata-center-redis pointing at it", () => {
    expect(overlayKustomization.resources).toEqual(["..", "valkey.yaml"]);
    expect(objects.map((object) => object.kind).sort()).toEqual(["NetworkPolicy", "Service", "StatefulSet"]);
    expect(overlayKustomization.secretGenerator?.map((generator) => generator.name)).toEqual(["metadata-center-redis"]);
    // No password: the sidecars' METADATA_CENTER_REDIS_PASSWORD stays unset (the key is optional).
    expect(overlayKustomization.secretGenerator?.[0]?.literals.map((literal) => literal.split("=")[0])).toEqual(["url"]);
  });

  it("points the URL at the headless Service, on the port that reaches the Valkey container, and the pod's config with it parses", () => {
    const url = new URL(secretUrl());
    expect(url.protocol).toBe("redis:");
    expect(url.hostname).toBe(service.metadata.name);
    expect(service.spec.clusterIP).toBe("None");
    expect(statefulSet.spec.serviceName).toBe(service.metadata.name);
    const [port] = service.spec.ports;
    expect(Number(url.port)).toBe(port?.port);
    expect(valkey.ports?.find((candidate) => candidate.name === port?.targetPort)?.containerPort).toBe(port?.port);
    const labels = statefulSet.spec.template.metadata?.labels ?? {};
    expect(statefulSet.spec.selector.matchLabels).toEqual(labels);
    for (const [key, value] of Object.entries(service.spec.selector)) expect(labels[key], key).toBe(value);
    expect(podConfig(secretUrl()).load.redis.url).toBe(secretUrl());
  });

  it("keeps nothing: one replica, no volume claim, no snapshot, no append-only file", () => {
    expect(statefulSet.spec.replicas).toBe(1);
    expect(statefulSet.spec.volumeClaimTemplates).toBeUndefined();
    const args = valkey.args ?? [];
    expect(args[args.indexOf("--save") + 1]).toBe("");
    expect(args[args.indexOf("--appendonly") + 1]).toBe("no");
  });

  it("lets only the gateway pods reach it, and is itself none of them", () => {
    const gateway = kustomization.labels?.[0]?.pairs ?? {};
    expect(Object.keys(gateway).length).toBeGreaterThan(0);
    expect(policy.spec.podSelector.matchLabels).toEqual(statefulSet.spec.selector.matchLabels);
    expect(policy.spec.policyTypes).toEqual(["Ingress"]);
    expect(policy.spec.ingress).toHaveLength(1);
    expect(policy.spec.ingress[0]?.from).toEqual([{ podSelector: { matchLabels: gateway } }]);
    expect(policy.spec.ingress[0]?.ports.map((port) => port.port)).toEqual(valkey.ports?.map((port) => port.containerPort));
    // The gateway's Service and budget select by the base's labels: the Valkey pod must not carry them.
    const labels = statefulSet.spec.template.metadata?.labels ?? {};
    expect(Object.entries(gateway).some(([key, value]) => labels[key] === value)).toBe(false);
  });
});

describe("deploy/compose.replicas.yaml", () => {
  const compose = parse(read("deploy/compose.replicas.yaml")) as {
    services: Record<string, { build?: unknown; image?: string; command?: string[]; environment?: Record<string, string>; volumes?: string[]; network_mode?: string }>;
  };
  const sidecars = Object.entries(compose.services).filter(([, service]) => service.build !== undefined);

  it("runs three Envoy + sidecar pairs and one Redis (Valkey)", () => {
    expect(sidecars.map(([name]) => name)).toEqual(["metadata-center-1", "metadata-center-2", "metadata-center-3"]);
    const redis = Object.entries(compose.services).filter(([, service]) => service.image?.startsWith("valkey/valkey:"));
    expect(redis.map(([name]) => name)).toEqual(["redis"]);
    const command = compose.services["redis"]?.command ?? [];
    expect(command[command.indexOf("--save") + 1]).toBe("");
    expect(command[command.indexOf("--appendonly") + 1]).toBe("no");
  });

  it("gives every sidecar the same config, mounted where --config reads it: Redis at the redis service, parsed by the real parser", () => {
    for (const [name, service] of sidecars) {
      const args = service.command ?? [];
      const path = args[args.indexOf("--config") + 1];
      const mount = (service.volumes ?? []).map((volume) => volume.split(":")).find(([, target]) => target === path);
      expect(mount?.[0], name).toBe("./metadata-center.replicas.yaml");
      expect(Object.keys(service.environment ?? {}).sort(), name).toEqual(["METADATA_CENTER_HTTP_TOKEN", "METADATA_CENTER_REDIS_PASSWORD"]);
    }
    const config = parseSidecarConfig(read("deploy/metadata-center.replicas.yaml"), "metadata-center.replicas.yaml", { tls: false });
    expect(config.load.store).toBe("redis");
    const url = new URL(config.load.redis.url as string);
    expect(Object.keys(compose.services)).toContain(url.hostname);
    expect(url.port).toBe("6379");
    // Envoy's bootstrap (deploy/envoy/envoy.yaml) reaches ext_proc on 127.0.0.1:9002 in the shared namespace.
    expect(config.extproc.port).toBe(9002);
    expect(read("deploy/envoy/envoy.yaml")).toMatch(/socket_address: \{ address: 127\.0\.0\.1, port_value: 9002 \}/);
  });
});
