import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { z } from "zod";
import { isLoopbackHost } from "../../src/config/schema.js";
import { configMapAt, read, readmeSecretKeys, root, secretKeyAt, sidecarConfig, TLS_SECRET, type PodSpec } from "./manifests.js";

interface Copy {
  from: string | undefined;
  sources: string[];
  dest: string;
}

/** The Dockerfile's COPY instructions, by stage. */
function copies(): Array<Copy & { stage: number }> {
  const result: Array<Copy & { stage: number }> = [];
  let stage = -1;
  for (const line of read("Dockerfile").split("\n")) {
    if (/^FROM\s/i.test(line)) stage += 1;
    const match = /^COPY\s+(.*)$/i.exec(line.trim());
    if (match === null) continue;
    const words = (match[1] ?? "").split(/\s+/);
    const from = words.find((word) => word.startsWith("--from="))?.slice("--from=".length);
    const paths = words.filter((word) => !word.startsWith("--"));
    result.push({ stage, from, sources: paths.slice(0, -1), dest: paths.at(-1) ?? "" });
  }
  return result;
}

describe("Dockerfile", () => {
  const ignored = read(".dockerignore").split("\n").map((line) => line.trim()).filter((line) => line !== "");

  it("copies from the build context only files that exist and that .dockerignore lets through", () => {
    const fromContext = copies().filter((copy) => copy.from === undefined).flatMap((copy) => copy.sources);
    expect(fromContext.length).toBeGreaterThan(3);
    for (const source of fromContext) {
      expect(existsSync(join(root, source)), source).toBe(true);
      expect(ignored.filter((pattern) => source === pattern || source.startsWith(`${pattern}/`)), source).toEqual([]);
    }
  });

  it("copies from the build stage only what the build stage has or makes", () => {
    const build = copies().filter((copy) => copy.stage === 0);
    const inBuild = new Set(build.flatMap((copy) => copy.sources.map((source) => `/app/${source.replace(/\/$/, "")}`)));
    const { compilerOptions } = JSON.parse(read("tsconfig.build.json")) as { compilerOptions: { outDir: string } };
    inBuild.add(`/app/${compilerOptions.outDir}`); // npm run build
    inBuild.add("/app/node_modules"); // npm ci
    const fromBuild = copies().filter((copy) => copy.from === "build").flatMap((copy) => copy.sources);
    expect(fromBuild.sort()).toEqual(["/app/dist", "/app/node_modules", "/app/package.json"]);
    for (const source of fromBuild) expect(inBuild.has(source), source).toBe(true);
  });

  it("starts the built entry point as a non-root user", () => {
    const text = read("Dockerfile");
    expect(text).toMatch(/^USER node$/m);
    expect(text).toContain('ENTRYPOINT ["node", "dist/main.js"]');
    expect(existsSync(join(root, "src/main.ts"))).toBe(true);
    const { bin } = JSON.parse(read("package.json")) as { bin: Record<string, string> };
    expect(Object.values(bin)).toEqual(["dist/main.js"]);
  });
});

describe("deploy/k8s", () => {
  const dir = "deploy/k8s";
  const kustomization = parse(read(`${dir}/kustomization.yaml`)) as {
    resources: string[];
    configMapGenerator: Array<{ name: string; files: string[] }>;
  };

  it("names only files that exist", () => {
    for (const file of [...kustomization.resources, ...kustomization.configMapGenerator.flatMap((generator) => generator.files)]) {
      expect(existsSync(join(root, dir, file)), file).toBe(true);
    }
  });

  it.each([dir, `${dir}/replicas`])("%s: carries deploy/envoy's mTLS bootstrap and its SDS file unchanged", (folder) => {
    for (const file of ["envoy-tls.yaml", "envoy-tls-sds.yaml"]) expect(read(`${folder}/${file}`), file).toBe(read(`deploy/envoy/${file}`));
  });

  it("mounts a valid sidecar config where the container reads it, on the ports the config says", () => {
    const deployment = parse(read(`${dir}/deployment.yaml`)) as {
      spec: {
        template: {
          spec: {
            containers: Array<{
              name: string;
              args?: string[];
              env?: Array<{ name: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }>;
              ports: Array<{ containerPort: number }>;
              volumeMounts: Array<{ name: string; mountPath: string }>;
            }>;
            volumes: Array<{ name: string; configMap: { name: string } }>;
          };
        };
      };
    };
    const pod = deployment.spec.template.spec;
    const sidecar = pod.containers.find((container) => container.name === "metadata-center");
    // The HTTP API is exposed: its token comes from a Secret the pod reads into the environment.
    const tokenFromSecret = sidecar?.env?.find((variable) => variable.name === "METADATA_CENTER_HTTP_TOKEN")?.valueFrom?.secretKeyRef;
    expect(tokenFromSecret).toBeDefined();
    const config = sidecarConfig(`${dir}/metadata-center.yaml`);
    const args = sidecar?.args ?? [];
    const configPath = args[args.indexOf("--config") + 1] ?? "";
    const mount = sidecar?.volumeMounts.find((volumeMount) => volumeMount.mountPath === dirname(configPath));
    const volume = pod.volumes.find((candidate) => candidate.name === mount?.name);
    const generator = kustomization.configMapGenerator.find((candidate) => candidate.name === volume?.configMap.name);
    expect(generator?.files).toContain(configPath.split("/").at(-1));
    expect(sidecar?.ports.map((port) => port.containerPort).sort()).toEqual([config.extproc.port, config.health.port, config.http.port].sort());
    // Envoy beside it in the pod reaches ext_proc over the loopback; the kubelet probes health on the pod's address.
    expect(isLoopbackHost(config.extproc.host)).toBe(true);
    expect(config.health.host).toBe("0.0.0.0");
  });
});

describe("deploy/k8s: the TLS Secret", () => {
  const keys = readmeSecretKeys();
  const podOf = (path: string): PodSpec => (parse(read(path)) as { spec: { template: { spec: PodSpec } } }).spec.template.spec;
  /** extproc.tls as the file names it (not validated: the files exist only in the pod). */
  const tlsOf = (path: string): Record<string, string> => (parse(read(path)) as { extproc: { tls: Record<string, string> } }).extproc.tls;

  it("is made by the README's one command with the keys both sides read", () => {
    expect(keys.sort()).toEqual(["ca.crt", "envoy.crt", "envoy.key", "server.crt", "server.key"]);
  });

  it.each(["deploy/k8s", "deploy/k8s/inference-pool", "deploy/k8s/replicas"])("%s: the sidecar finds its certificate, key and client CA where its config names them", (dir) => {
    const pod = podOf(`${dir}/deployment.yaml`);
    const tls = tlsOf(`${dir}/metadata-center.yaml`);
    const served = (field: string) => secretKeyAt(pod, "metadata-center", tls[field] ?? "");
    expect(served("certFile")).toEqual({ secret: TLS_SECRET, key: "server.crt" });
    expect(served("keyFile")).toEqual({ secret: TLS_SECRET, key: "server.key" });
    expect(served("clientCaFile")).toEqual({ secret: TLS_SECRET, key: "ca.crt" });
    for (const item of pod.volumes.flatMap((volume) => volume.secret?.items ?? [])) expect(keys, item.key).toContain(item.key);
    // Each key only where it is used.
    const holders = (key: string): string[] =>
      pod.containers
        .filter((container) => (container.volumeMounts ?? []).some((mount) => pod.volumes.find((volume) => volume.name === mount.name)?.secret?.items?.some((item) => item.key === key)))
        .map((container) => container.name);
    expect(holders("server.key")).toEqual(["metadata-center"]);
    expect(holders("envoy.key")).toEqual(pod.containers.some((container) => container.name === "envoy") ? ["envoy"] : []);
  });

  it.each(["deploy/k8s", "deploy/k8s/replicas"])("%s: Envoy reads its bootstrap and SDS file from its ConfigMap, and its certificate, key and the CA from the Secret", (dir) => {
    const pod = podOf(`${dir}/deployment.yaml`);
    const kustomization = parse(read(`${dir}/kustomization.yaml`)) as { configMapGenerator: Array<{ name: string; files: string[] }> };
    const args = pod.containers.find((container) => container.name === "envoy")?.args ?? [];
    const bootstrapPath = args[args.indexOf("-c") + 1] ?? "";
    const bootstrap = read(`${dir}/${bootstrapPath.split("/").at(-1)}`);
    const sdsPaths = [...new Set([...bootstrap.matchAll(/path_config_source: \{ path: (\S+) \}/g)].map(([, path]) => path ?? ""))];
    expect(sdsPaths).toEqual(["/etc/envoy/envoy-tls-sds.yaml"]);
    for (const path of [bootstrapPath, ...sdsPaths]) {
      const configMap = configMapAt(pod, "envoy", path);
      expect(kustomization.configMapGenerator.find((generator) => generator.name === configMap)?.files, path).toContain(path.split("/").at(-1));
    }
    const sds = parse(read(`${dir}/envoy-tls-sds.yaml`)) as {
      resources: Array<{
        tls_certificate?: { certificate_chain: { filename: string }; private_key: { filename: string }; watched_directory: { path: string } };
        validation_context?: { trusted_ca: { filename: string }; watched_directory: { path: string } };
      }>;
    };
    const certificate = sds.resources.find((resource) => resource.tls_certificate !== undefined)?.tls_certificate;
    const validation = sds.resources.find((resource) => resource.validation_context !== undefined)?.validation_context;
    expect(secretKeyAt(pod, "envoy", certificate?.certificate_chain.filename ?? "")).toEqual({ secret: TLS_SECRET, key: "envoy.crt" });
    expect(secretKeyAt(pod, "envoy", certificate?.private_key.filename ?? "")).toEqual({ secret: TLS_SECRET, key: "envoy.key" });
    expect(secretKeyAt(pod, "envoy", validation?.trusted_ca.filename ?? "")).toEqual({ secret: TLS_SECRET, key: "ca.crt" });
    // Envoy watches the folder the Secret is mounted on: the kubelet's swap of its files is a move there.
    const mounted = pod.containers.find((container) => container.name === "envoy")?.volumeMounts?.map((mount) => mount.mountPath);
    expect(mounted).toContain(certificate?.watched_directory.path);
    expect(validation?.watched_directory.path).toBe(certificate?.watched_directory.path);
  });
});

// The Compose Specification's own JSON schema (compose-spec/compose-spec, schema/compose-spec.json
// at a08f8d51631b7127ddac3d2c65537db429d0f1d0, Apache-2.0), read through zod's JSON Schema reader:
// unknown keys fail (but x- extensions, as Compose), and so do wrong types and enum values.
const composeSpec = ((): z.ZodType => {
  const schema = JSON.parse(readFileSync(join(root, "test/deploy/compose-spec.json"), "utf8")) as Record<string, unknown>;
  // Draft 7 ("definitions"): zod reads the version from defaultTarget, not from this URL's spelling.
  delete schema["$schema"];
  return z.fromJSONSchema(schema as never, { defaultTarget: "draft-7" });
})();
const composeFiles = ["deploy/compose.yaml", "deploy/compose.replicas.yaml"];

interface ComposeService {
  build?: { context: string; dockerfile: string };
  image?: string;
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  network_mode?: string;
  depends_on?: string[];
}
const composeOf = (path: string): { services: Record<string, ComposeService> } => parse(read(path)) as { services: Record<string, ComposeService> };
const composeIssues = (compose: unknown): string[] => {
  const result = composeSpec.safeParse(compose);
  return result.success ? [] : result.error.issues.map((issue) => `${issue.path.join(".")}: ${issue.message}`);
};

describe.each(composeFiles)("%s", (path) => {
  it("is valid against the Compose Specification's schema", () => {
    expect(composeIssues(composeOf(path))).toEqual([]);
  });

  it("builds from the Dockerfile and mounts files that exist", () => {
    const services = Object.values(composeOf(path).services);
    const builds = services.flatMap((service) => (service.build === undefined ? [] : [service.build]));
    expect(builds.length).toBeGreaterThan(0);
    for (const build of builds) expect(existsSync(join(root, "deploy", build.context, build.dockerfile))).toBe(true);
    const mounts = services.flatMap((service) => service.volumes ?? []);
    expect(mounts.length).toBeGreaterThan(0);
    for (const volume of mounts) expect(existsSync(join(root, "deploy", volume.split(":")[0] ?? "")), volume).toBe(true);
  });

  it("puts each Envoy in a sidecar's network namespace, one Envoy per sidecar, each pair on host ports of its own", () => {
    const { services } = composeOf(path);
    const envoys = Object.entries(services).filter(([, service]) => service.image?.startsWith("envoyproxy/envoy:"));
    const sidecars = Object.entries(services).filter(([, service]) => service.build !== undefined);
    expect(envoys.length).toBeGreaterThan(0);
    const namespaces = envoys.map(([, envoy]) => /^service:(.+)$/.exec(envoy.network_mode ?? "")?.[1]);
    expect(namespaces.sort()).toEqual(sidecars.map(([name]) => name).sort());
    for (const [, envoy] of envoys) expect(envoy.depends_on).toEqual([envoy.network_mode?.slice("service:".length)]);
    const hostPorts = sidecars.flatMap(([, sidecar]) => (sidecar.ports ?? []).map((port) => port.split(":")[0]));
    expect(new Set(hostPorts).size).toBe(hostPorts.length);
  });

  it("refuses a misspelt key, a value of the wrong type and an unknown top-level key", () => {
    const misspelt = composeOf(path);
    const envoy = Object.values(misspelt.services).find((service) => service.network_mode !== undefined) as Record<string, unknown>;
    envoy["netwrok_mode"] = envoy["network_mode"];
    delete envoy["network_mode"];
    expect(composeIssues(misspelt).join("\n")).toMatch(/Unrecognized key: "netwrok_mode"/);
    const wrongType = composeOf(path);
    (Object.values(wrongType.services)[0] as Record<string, unknown>)["network_mode"] = 8080;
    expect(composeIssues(wrongType).join("\n")).toMatch(/network_mode: Invalid input: expected string, received number/);
    const topLevel = composeOf(path) as Record<string, unknown>;
    topLevel["service"] = topLevel["services"];
    expect(composeIssues(topLevel).join("\n")).toMatch(/Unrecognized key: "service"/);
  });
});
