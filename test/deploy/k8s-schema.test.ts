import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { StatefulSet } from "kubernetes-models/apps/v1/StatefulSet";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Secret } from "kubernetes-models/v1/Secret";
import { Service } from "kubernetes-models/v1/Service";
import { sidecarConfig } from "./manifests.js";

// Every Kubernetes object under deploy/k8s/ is checked against the official OpenAPI schemas
// (kubernetes-models: the Kubernetes API's JSON schemas compiled to validators, offline).
// The schemas catch wrong types, missing required fields and bad enum/format values; like the
// API server without --validate=strict, they do not reject unknown keys.

const root = new URL("../..", import.meta.url).pathname;
const k8s = join(root, "deploy/k8s");

type Manifest = Record<string, unknown> & { apiVersion?: unknown; kind?: unknown };

interface Validatable {
  validate(): void;
}

/** The built-in kinds the manifests use, by apiVersion/kind. */
const builtIn: Record<string, (data: Manifest) => Validatable> = {
  "apps/v1/Deployment": (data) => new Deployment(data as never),
  "apps/v1/StatefulSet": (data) => new StatefulSet(data as never),
  "networking.k8s.io/v1/NetworkPolicy": (data) => new NetworkPolicy(data as never),
  "v1/Service": (data) => new Service(data as never),
  "v1/ConfigMap": (data) => new ConfigMap(data as never),
  "v1/Secret": (data) => new Secret(data as never),
  "policy/v1/PodDisruptionBudget": (data) => new PodDisruptionBudget(data as never),
};

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null && !Array.isArray(value);

/** Gateway API Inference Extension v1 InferencePool (a CRD): the shape of what the CRD requires. */
function checkInferencePool(data: Manifest): void {
  const problems: string[] = [];
  const spec = data["spec"];
  if (!isRecord(data["metadata"]) || typeof data["metadata"]["name"] !== "string") problems.push("metadata.name missing");
  if (!isRecord(spec)) throw new Error("InferencePool: spec missing");
  const known = new Set(["selector", "targetPorts", "appProtocol", "endpointPickerRef"]);
  for (const key of Object.keys(spec)) if (!known.has(key)) problems.push(`spec.${key}: unknown field`);
  const selector = spec["selector"];
  if (!isRecord(selector) || !isRecord(selector["matchLabels"]) || Object.keys(selector["matchLabels"]).length === 0) {
    problems.push("spec.selector.matchLabels: required, non-empty");
  } else {
    for (const [key, value] of Object.entries(selector["matchLabels"])) if (typeof value !== "string") problems.push(`spec.selector.matchLabels.${key}: not a string`);
  }
  const ports = spec["targetPorts"];
  if (!Array.isArray(ports) || ports.length < 1 || ports.length > 8) problems.push("spec.targetPorts: 1 to 8 items required");
  else {
    for (const port of ports) {
      const number: unknown = isRecord(port) ? port["number"] : undefined;
      if (!Number.isInteger(number) || (number as number) < 1 || (number as number) > 65535) problems.push(`spec.targetPorts: bad port ${JSON.stringify(port)}`);
    }
    if (new Set(ports.map((port: unknown) => (isRecord(port) ? port["number"] : port))).size !== ports.length) problems.push("spec.targetPorts: numbers must be unique");
  }
  const picker = spec["endpointPickerRef"];
  if (!isRecord(picker)) problems.push("spec.endpointPickerRef: required");
  else {
    const knownPicker = new Set(["group", "kind", "name", "port", "failureMode"]);
    for (const key of Object.keys(picker)) if (!knownPicker.has(key)) problems.push(`spec.endpointPickerRef.${key}: unknown field`);
    if (typeof picker["name"] !== "string" || picker["name"] === "") problems.push("spec.endpointPickerRef.name: required");
    const kind = picker["kind"] ?? "Service";
    const number: unknown = isRecord(picker["port"]) ? picker["port"]["number"] : undefined;
    // The CRD requires the port when the picker is a Service.
    if (kind === "Service" && (!Number.isInteger(number) || (number as number) < 1 || (number as number) > 65535)) problems.push("spec.endpointPickerRef.port.number: required for a Service");
    if (picker["failureMode"] !== undefined && !["FailOpen", "FailClose"].includes(picker["failureMode"] as string)) problems.push("spec.endpointPickerRef.failureMode: FailOpen or FailClose");
  }
  if (problems.length > 0) throw new Error(`InferencePool: ${problems.join("; ")}`);
}

/** Validates one object by its apiVersion/kind; an unknown kind is an error. */
function validateManifest(data: Manifest): void {
  const key = `${String(data.apiVersion)}/${String(data.kind)}`;
  if (key === "inference.networking.k8s.io/v1/InferencePool") return checkInferencePool(data);
  const model = builtIn[key];
  if (model === undefined) throw new Error(`no schema for ${key}`);
  model(data).validate();
}

/** Every YAML file under deploy/k8s/, recursively. */
function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? yamlFiles(join(dir, entry.name)) : /\.ya?ml$/.test(entry.name) ? [join(dir, entry.name)] : [],
  );
}

interface Kustomization {
  apiVersion: string;
  kind: string;
  labels?: Array<{ pairs: Record<string, string>; includeSelectors?: boolean }>;
  /** Object files beside it, or folders of other kustomizations (an overlay's base, e.g. ".."). */
  resources: string[];
  configMapGenerator?: Array<{ name: string; files: string[] }>;
  secretGenerator?: Array<{ name: string; literals: string[] }>;
}

const kustomizations = yamlFiles(k8s).filter((file) => file.endsWith("/kustomization.yaml"));
const kustomizationOf = (file: string): Kustomization => parseAllDocuments(readFileSync(file, "utf8"))[0]?.toJS() as Kustomization;
/** Files a kustomization takes as ConfigMap data, not as objects (sidecar configs, Envoy bootstraps). */
const generatorFiles = new Set(
  kustomizations.flatMap((file) => (kustomizationOf(file).configMapGenerator ?? []).flatMap((generator) => generator.files.map((name) => join(file, "..", name)))),
);
const manifestFiles = yamlFiles(k8s).filter((file) => !file.endsWith("/kustomization.yaml") && !generatorFiles.has(file));
/** A resource naming a folder: another kustomization, whose objects it takes in. */
const isBase = (file: string, resource: string): boolean => existsSync(join(file, "..", resource, "kustomization.yaml"));
/** The objects a kustomization's resources hold, its bases' too (before kustomize's transformers). */
function objectsOf(file: string): Manifest[] {
  return kustomizationOf(file).resources.flatMap((resource) =>
    isBase(file, resource) ? objectsOf(join(file, "..", resource, "kustomization.yaml")) : documents(join(file, "..", resource)),
  );
}
/** The Secret a secretGenerator makes from its literals (key=value). */
const generatedSecret = (generator: { name: string; literals: string[] }): Manifest => ({
  apiVersion: "v1",
  kind: "Secret",
  metadata: { name: generator.name },
  stringData: Object.fromEntries(generator.literals.map((literal) => [literal.slice(0, literal.indexOf("=")), literal.slice(literal.indexOf("=") + 1)])),
});

function documents(file: string): Manifest[] {
  return parseAllDocuments(readFileSync(file, "utf8")).map((document) => {
    expect(document.errors, relative(root, file)).toEqual([]);
    return document.toJS() as Manifest;
  });
}

describe("deploy/k8s manifests against the Kubernetes schemas", () => {
  it("finds every kustomization and their objects", () => {
    expect(kustomizations.map((file) => relative(k8s, file)).sort()).toEqual([
      "inference-pool/kustomization.yaml",
      "kustomization.yaml",
      "replicas/kustomization.yaml",
      "replicas/valkey/kustomization.yaml",
    ]);
    expect(manifestFiles.length).toBeGreaterThanOrEqual(10);
  });

  it.each(manifestFiles.map((file) => [relative(root, file), file]))("%s: every document valid for its apiVersion/kind", (_name, file) => {
    const docs = documents(file);
    expect(docs.length).toBeGreaterThan(0);
    for (const doc of docs) expect(() => validateManifest(doc)).not.toThrow();
  });

  it.each(kustomizations.map((file) => [relative(root, file), file]))("%s: a kustomization naming every object file beside it", (_name, file) => {
    const kustomization = kustomizationOf(file);
    expect(kustomization.apiVersion).toBe("kustomize.config.k8s.io/v1beta1");
    expect(kustomization.kind).toBe("Kustomization");
    const dir = join(file, "..");
    for (const name of [...kustomization.resources, ...(kustomization.configMapGenerator ?? []).flatMap((generator) => generator.files)]) {
      expect(existsSync(join(dir, name)), name).toBe(true);
    }
    const beside = manifestFiles.filter((manifest) => join(manifest, "..") === dir).map((manifest) => relative(dir, manifest));
    expect(kustomization.resources.filter((name) => !isBase(file, name)).sort()).toEqual(beside.sort());
  });

  it.each(kustomizations.map((file) => [relative(root, file), file]))("%s: every Secret its secretGenerator makes valid", (_name, file) => {
    for (const generator of kustomizationOf(file).secretGenerator ?? []) {
      for (const literal of generator.literals) expect(literal, generator.name).toMatch(/^[-._a-zA-Z0-9]+=./);
      expect(() => validateManifest(generatedSecret(generator))).not.toThrow();
    }
  });
});

describe("the schema check fails bad manifests", () => {
  const deployment = (): Manifest => documents(join(k8s, "deployment.yaml"))[0] as Manifest;
  const containers = (doc: Manifest): Array<Record<string, unknown>> =>
    ((doc["spec"] as { template: { spec: { containers: Array<Record<string, unknown>> } } }).template.spec.containers);

  it("a containerPort that is not a number", () => {
    const doc = deployment();
    (containers(doc)[1]?.["ports"] as Array<Record<string, unknown>>)[0] = { name: "ext-proc", containerPort: "9002x" };
    expect(() => validateManifest(doc)).toThrow(/containerPort must be integer/);
  });

  it("replicas as a word", () => {
    const doc = deployment();
    (doc["spec"] as Record<string, unknown>)["replicas"] = "two";
    expect(() => validateManifest(doc)).toThrow(/replicas must be integer/);
  });

  it("a container without its name, and a probe port given as a string", () => {
    const doc = deployment();
    delete containers(doc)[0]?.["name"];
    expect(() => validateManifest(doc)).toThrow(/name/);
    const other = deployment();
    (containers(other)[1] as Record<string, unknown>)["livenessProbe"] = { grpc: { port: "9003" } };
    expect(() => validateManifest(other)).toThrow(/port must be integer/);
  });

  it("a StatefulSet without its selector, and a NetworkPolicy with an unknown policy type or protocol", () => {
    const valkey = (): Manifest[] => documents(join(k8s, "replicas/valkey/valkey.yaml"));
    const byKind = (docs: Manifest[], kind: string): Manifest => docs.find((doc) => doc.kind === kind) as Manifest;
    const statefulSet = byKind(valkey(), "StatefulSet");
    delete (statefulSet["spec"] as Record<string, unknown>)["selector"];
    expect(() => validateManifest(statefulSet)).toThrow(/required property selector/);
    const policy = byKind(valkey(), "NetworkPolicy");
    (policy["spec"] as Record<string, unknown>)["policyTypes"] = ["Ingres"];
    expect(() => validateManifest(policy)).toThrow(/policyTypes\/0 must be equal to one of the allowed values/);
    const protocol = byKind(valkey(), "NetworkPolicy");
    ((protocol["spec"] as { ingress: Array<{ ports: Array<Record<string, unknown>> }> }).ingress[0]?.ports[0] as Record<string, unknown>)["protocol"] = "TPC";
    expect(() => validateManifest(protocol)).toThrow(/protocol must be equal to one of the allowed values/);
  });

  it("a generated Secret whose data is not text", () => {
    const secret = generatedSecret({ name: "metadata-center-redis", literals: ["url=redis://x:6379"] });
    (secret["stringData"] as Record<string, unknown>)["url"] = 6379;
    expect(() => validateManifest(secret)).toThrow(/must be string/);
  });

  it("a kind with no schema", () => {
    expect(() => validateManifest({ apiVersion: "apps/v1", kind: "Deploymnet", metadata: { name: "x" } })).toThrow(/no schema for apps\/v1\/Deploymnet/);
  });

  it("an InferencePool missing what the CRD requires, or with a typo'd field", () => {
    const pool = (): Manifest => documents(join(k8s, "inference-pool/inferencepool.yaml"))[0] as Manifest;
    const spec = (doc: Manifest): Record<string, unknown> => doc["spec"] as Record<string, unknown>;
    const noPorts = pool();
    delete spec(noPorts)["targetPorts"];
    expect(() => validateManifest(noPorts)).toThrow(/targetPorts/);
    const typo = pool();
    spec(typo)["endpointPickerRef"] = { name: "metadata-center-epp", prot: { number: 9002 } };
    expect(() => validateManifest(typo)).toThrow(/prot: unknown field/);
    const badPort = pool();
    spec(badPort)["targetPorts"] = [{ number: "8000" }];
    expect(() => validateManifest(badPort)).toThrow(/bad port/);
  });
});

describe("deploy/k8s workloads", () => {
  type Workload = Manifest & { spec: { replicas?: number; template: { spec: { securityContext: { runAsNonRoot: boolean }; initContainers?: Array<Record<string, any>>; containers: Array<Record<string, any>> } } } };
  const workloads = manifestFiles.flatMap((file) =>
    documents(file)
      .filter((doc) => doc.kind === "Deployment" || doc.kind === "StatefulSet")
      .map((doc) => [`${relative(k8s, file)} (${String(doc.kind)})`, doc as Workload] as const),
  );

  it("are the gateway's, the picker's, the replicas' and their Valkey", () => {
    expect(workloads.map(([name]) => name).sort()).toEqual([
      "deployment.yaml (Deployment)",
      "inference-pool/deployment.yaml (Deployment)",
      "replicas/deployment.yaml (Deployment)",
      "replicas/valkey/valkey.yaml (StatefulSet)",
    ]);
  });

  it.each(workloads)("%s: runs every container non-root on a read-only root filesystem, with resource requests", (_name, doc) => {
    const pod = doc.spec.template.spec;
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    for (const container of [...(pod.initContainers ?? []), ...pod.containers]) {
      expect(container["securityContext"]?.readOnlyRootFilesystem, container["name"]).toBe(true);
      expect(container["securityContext"]?.allowPrivilegeEscalation, container["name"]).toBe(false);
      expect(container["securityContext"]?.capabilities, container["name"]).toEqual({ drop: ["ALL"] });
      expect(container["resources"]?.requests?.cpu, container["name"]).toBeDefined();
      expect(container["resources"]?.requests?.memory, container["name"]).toBeDefined();
      expect(container["resources"]?.limits?.memory, container["name"]).toBeDefined();
    }
    for (const container of pod.containers) expect(container["readinessProbe"], container["name"]).toBeDefined();
  });

  it.each(workloads.filter(([, doc]) => doc.spec.template.spec.containers.some((container) => container["name"] === "metadata-center")))(
    "%s: probes metadata-center by gRPC health and by HTTP /healthz",
    (_name, doc) => {
      const sidecar = doc.spec.template.spec.containers.find((container) => container["name"] === "metadata-center");
      expect(sidecar?.["livenessProbe"]).toEqual({ grpc: { port: 9003, service: "liveness" } });
      expect(sidecar?.["readinessProbe"]).toEqual({ grpc: { port: 9003, service: "readiness" } });
      expect(sidecar?.["startupProbe"]?.httpGet).toEqual({ path: "/healthz", port: 9090 });
    },
  );

  it.each(["kustomization.yaml", "replicas/kustomization.yaml"])("%s: a PodDisruptionBudget that keeps a pod serving and lets a drain go on", (name) => {
    const objects = objectsOf(join(k8s, name));
    const budget = objects.find((object) => object.kind === "PodDisruptionBudget") as { spec: { minAvailable: number } } | undefined;
    const deployment = objects.find((object) => object.kind === "Deployment") as Workload | undefined;
    expect(budget?.spec.minAvailable).toBeGreaterThanOrEqual(1);
    expect(budget?.spec.minAvailable).toBeLessThan(deployment?.spec.replicas ?? 1);
  });
});

describe("deploy/k8s/inference-pool", () => {
  const dir = join(k8s, "inference-pool");
  const objects = kustomizationOf(join(dir, "kustomization.yaml")).resources.flatMap((name) => documents(join(dir, name)));
  const byKind = (kind: string): any => objects.find((object) => object.kind === kind);

  it("points the InferencePool's picker at the Service's ext_proc port, which reaches the Deployment's pods", () => {
    const pool = byKind("InferencePool");
    const service = byKind("Service");
    const deployment = byKind("Deployment");
    expect(pool.spec.endpointPickerRef.name).toBe(service.metadata.name);
    expect(pool.spec.endpointPickerRef.port).toEqual({ number: 9002 });
    expect(pool.spec.targetPorts).toEqual([{ number: 8000 }]);
    expect(service.spec.ports.map((port: { port: number }) => port.port).sort()).toEqual([9002, 9003, 9090]);
    const labels = deployment.spec.template.metadata.labels as Record<string, string>;
    for (const [key, value] of Object.entries(service.spec.selector as Record<string, string>)) expect(labels[key], key).toBe(value);
    const containerPorts = new Map<string, number>(deployment.spec.template.spec.containers[0].ports.map((port: { name: string; containerPort: number }) => [port.name, port.containerPort]));
    for (const port of service.spec.ports) expect(containerPorts.get(port.targetPort), port.name).toBe(port.port);
  });

  it("runs a valid config listening on 0.0.0.0 on the ports it declares, its pool on the InferencePool's target port", () => {
    const config = sidecarConfig("deploy/k8s/inference-pool/metadata-center.yaml");
    expect(config.extproc.host).toBe("0.0.0.0");
    expect(config.health.host).toBe("0.0.0.0");
    expect(config.http.host).toBe("0.0.0.0");
    expect([config.extproc.port, config.health.port, config.http.port]).toEqual([9002, 9003, 9090]);
    const container = byKind("Deployment").spec.template.spec.containers[0];
    expect(container.ports.map((port: { containerPort: number }) => port.containerPort).sort()).toEqual([9002, 9003, 9090]);
    expect(container.env.find((variable: { name: string }) => variable.name === "METADATA_CENTER_HTTP_TOKEN").valueFrom.secretKeyRef.name).toBe("metadata-center-http-token");
    const pool = config.pools[0] as unknown as { dns?: { port: number } };
    expect(pool.dns?.port).toBe(8000);
  });
});
