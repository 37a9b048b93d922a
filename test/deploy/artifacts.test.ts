import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { parseConfig } from "../../src/config/load.js";
import { isLoopbackHost } from "../../src/config/schema.js";

const root = new URL("../..", import.meta.url).pathname;
const read = (path: string): string => readFileSync(join(root, path), "utf8");

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

  it("carries deploy/envoy/envoy.yaml unchanged", () => {
    expect(read(`${dir}/envoy.yaml`)).toBe(read("deploy/envoy/envoy.yaml"));
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
    const config = parseConfig(read(`${dir}/metadata-center.yaml`), "metadata-center.yaml", [
      { path: ["http", "token"], value: "a-token-from-the-secret-0123456789", source: "env METADATA_CENTER_HTTP_TOKEN", numeric: false },
    ]);
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

describe("deploy/compose.yaml", () => {
  it("builds from the Dockerfile and mounts the Envoy bootstrap that exists", () => {
    const compose = parse(read("deploy/compose.yaml")) as {
      services: Record<string, { build?: { context: string; dockerfile: string }; volumes?: string[] }>;
    };
    const build = compose.services["metadata-center"]?.build;
    expect(existsSync(join(root, "deploy", build?.context ?? "", build?.dockerfile ?? ""))).toBe(true);
    for (const volume of compose.services["envoy"]?.volumes ?? []) expect(existsSync(join(root, "deploy", volume.split(":")[0] ?? ""))).toBe(true);
  });
});
