import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createFileRegistry, fromBinary, fromJson, type JsonValue, type Registry } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";

const root = new URL("../..", import.meta.url).pathname;
const deployDir = join(root, "deploy/envoy");

/** The bootstrap and every type a `typed_config` in deploy/envoy names. */
const protoFiles = [
  "envoy/config/bootstrap/v3/bootstrap.proto",
  "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
  "envoy/extensions/filters/http/router/v3/router.proto",
  "envoy/extensions/filters/http/ext_proc/v3/ext_proc.proto",
  "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
  "envoy/extensions/transport_sockets/tls/v3/tls.proto",
  // SDS files (path_config_source) hold a DiscoveryResponse of Secret resources.
  "envoy/service/discovery/v3/discovery.proto",
];

let registry: Registry;

beforeAll(() => {
  const dir = mkdtempSync(join(tmpdir(), "mc-envoy-image-"));
  try {
    const image = join(dir, "image.binpb");
    const paths = protoFiles.flatMap((file) => ["--path", join("proto/envoy-api", file)]);
    execFileSync("npx", ["buf", "build", "-o", image, ...paths], { cwd: root, stdio: "pipe" });
    registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(image)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Parses a file as Envoy would read it: unknown keys and enum values are refused, inside Any too. */
function validateAs(type: string, config: unknown): void {
  const message = registry.getMessage(type);
  if (message === undefined) throw new Error(`${type} is not in the image`);
  fromJson(message, config as JsonValue, { registry });
}
const validate = (config: unknown): void => validateAs("envoy.config.bootstrap.v3.Bootstrap", config);

/** SDS resources a bootstrap reads from a file (path_config_source), named *-sds.yaml; the rest are bootstraps. */
const isSds = (name: string): boolean => name.endsWith("-sds.yaml");
const files = readdirSync(deployDir).filter((name) => name.endsWith(".yaml") && !isSds(name));
const load = (name: string): Record<string, unknown> => parse(readFileSync(join(deployDir, name), "utf8")) as Record<string, unknown>;

type Node = Record<string, unknown>;

/** Every object in the tree whose "@type" is the given type. */
function typed(tree: unknown, type: string): Node[] {
  const found: Node[] = [];
  const walk = (value: unknown): void => {
    if (Array.isArray(value)) value.forEach(walk);
    else if (typeof value === "object" && value !== null) {
      const node = value as Node;
      if (node["@type"] === `type.googleapis.com/${type}`) found.push(node);
      Object.values(node).forEach(walk);
    }
  };
  walk(tree);
  return found;
}

const EXT_PROC = "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor";
const ROUTER = "envoy.extensions.filters.http.router.v3.Router";
const UPSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

describe("deploy/envoy", () => {
  it("holds the picker, observer, BUFFERED and mTLS bootstraps, and the mTLS one's SDS file", () => {
    expect(files.sort()).toEqual(["envoy-buffered.yaml", "envoy-observer.yaml", "envoy-tls.yaml", "envoy.yaml"]);
    expect(readdirSync(deployDir).filter(isSds)).toEqual(["envoy-tls-sds.yaml"]);
  });

  describe.each(files)("%s", (name) => {
    it("is a valid Envoy bootstrap", () => {
      expect(() => validate(load(name))).not.toThrow();
    });

    it("refuses a misspelt field inside a typed_config", () => {
      const config = load(name);
      const [router] = typed(config, ROUTER);
      if (router === undefined) throw new Error("no router");
      router["supress_envoy_headers"] = true;
      expect(() => validate(config)).toThrow(/supress_envoy_headers/);
    });

    it("refuses an unknown enum value inside a typed_config", () => {
      const config = load(name);
      const [extProc] = typed(config, EXT_PROC);
      (extProc?.["processing_mode"] as Node)["request_body_mode"] = "FULL_DUPLEX_STREAM";
      expect(() => validate(config)).toThrow(/FULL_DUPLEX_STREAM/);
    });

    it("refuses a misspelt top-level field", () => {
      const config = load(name);
      config["static_resource"] = config["static_resources"];
      delete config["static_resources"];
      expect(() => validate(config)).toThrow(/static_resource/);
    });

    it("routes by the picked ip:port through an ORIGINAL_DST cluster", () => {
      const clusters = (load(name)["static_resources"] as { clusters: Node[] }).clusters;
      const engines = clusters.find((cluster) => cluster["name"] === "engines");
      expect(engines).toMatchObject({
        type: "ORIGINAL_DST",
        lb_policy: "CLUSTER_PROVIDED",
        original_dst_lb_config: { use_http_header: true, http_header_name: "x-gateway-destination-endpoint" },
      });
      for (const router of typed(load(name), ROUTER)) expect(router["suppress_envoy_headers"]).toBe(true);
    });

    it("normalises the path and merges slashes before ext_proc sees it", () => {
      const managers = typed(load(name), HCM);
      expect(managers.length).toBeGreaterThan(0);
      for (const manager of managers) expect(manager).toMatchObject({ normalize_path: true, merge_slashes: true });
    });
  });

  it("keeps the pickers' envoy.lb metadata, and forwards the earlier picker's to the observer", () => {
    const metadataOptions = (name: string): unknown[] => typed(load(name), EXT_PROC).map((node) => node["metadata_options"]);
    for (const name of ["envoy.yaml", "envoy-buffered.yaml", "envoy-tls.yaml"]) {
      expect(metadataOptions(name)).toEqual([{ receiving_namespaces: { untyped: ["envoy.lb"] } }]);
    }
    expect(metadataOptions("envoy-observer.yaml")).toEqual([
      { receiving_namespaces: { untyped: ["envoy.lb"] } },
      { forwarding_namespaces: { untyped: ["envoy.lb"] } },
    ]);
  });

  it("uses the body modes each variant is for", () => {
    const modes = (name: string): unknown[] => typed(load(name), EXT_PROC).map((node) => node["processing_mode"]);
    const duplex = {
      request_body_mode: "FULL_DUPLEX_STREAMED",
      response_body_mode: "FULL_DUPLEX_STREAMED",
      request_trailer_mode: "SEND",
      response_trailer_mode: "SEND",
    };
    expect(modes("envoy.yaml")).toEqual([expect.objectContaining(duplex)]);
    expect(modes("envoy-tls.yaml")).toEqual([expect.objectContaining(duplex)]);
    expect(modes("envoy-observer.yaml")).toEqual([expect.objectContaining(duplex), expect.objectContaining(duplex)]);
    expect(modes("envoy-buffered.yaml")).toEqual([
      expect.objectContaining({ request_body_mode: "BUFFERED", response_body_mode: "STREAMED" }),
    ]);
  });

  describe("envoy-tls.yaml", () => {
    const clusterOf = (config: Record<string, unknown>, name: string): Node | undefined =>
      (config["static_resources"] as { clusters: Node[] }).clusters.find((cluster) => cluster["name"] === name);
    const sds = (): Node => load("envoy-tls-sds.yaml") as Node;

    it("is envoy.yaml with the sidecar's cluster over TLS", () => {
      const config = load("envoy-tls.yaml");
      const sidecar = clusterOf(config, "metadata-center");
      expect(sidecar?.["transport_socket"]).toMatchObject({ name: "envoy.transport_sockets.tls" });
      delete sidecar?.["transport_socket"];
      expect(config).toEqual(load("envoy.yaml"));
    });

    it("sends the SNI on h2, with a client certificate and the CA's validation from its SDS file", () => {
      const [context] = typed(load("envoy-tls.yaml"), UPSTREAM_TLS);
      expect(context).toMatchObject({ sni: "metadata-center", common_tls_context: { alpn_protocols: ["h2"] } });
      const common = context?.["common_tls_context"] as {
        tls_certificate_sds_secret_configs: Array<{ name: string; sds_config: { path_config_source: { path: string } } }>;
        validation_context_sds_secret_config: { name: string; sds_config: { path_config_source: { path: string } } };
      };
      const referenced = [...common.tls_certificate_sds_secret_configs, common.validation_context_sds_secret_config];
      // The bootstrap names the SDS file where the Kubernetes pod mounts it, beside the bootstrap.
      for (const secret of referenced) expect(secret.sds_config.path_config_source.path).toBe("/etc/envoy/envoy-tls-sds.yaml");
      const resources = (sds()["resources"] as Node[]).map((resource) => resource["name"]);
      expect(referenced.map((secret) => secret.name).sort()).toEqual([...resources].sort());
    });

    it("has an SDS file Envoy accepts: its certificate, key and CA, re-read when their folder changes, and the sidecar's name checked", () => {
      expect(() => validateAs("envoy.service.discovery.v3.DiscoveryResponse", sds())).not.toThrow();
      const [certificate, ca] = sds()["resources"] as Node[];
      expect(certificate?.["tls_certificate"]).toEqual({
        certificate_chain: { filename: "/etc/envoy-tls/envoy.crt" },
        private_key: { filename: "/etc/envoy-tls/envoy.key" },
        watched_directory: { path: "/etc/envoy-tls" },
      });
      expect(ca?.["validation_context"]).toEqual({
        trusted_ca: { filename: "/etc/envoy-tls/ca.crt" },
        watched_directory: { path: "/etc/envoy-tls" },
        match_typed_subject_alt_names: [{ san_type: "DNS", matcher: { exact: "metadata-center" } }],
      });
    });

    it("refuses a misspelt field inside the TLS context and inside an SDS resource", () => {
      const config = load("envoy-tls.yaml");
      const [context] = typed(config, UPSTREAM_TLS);
      if (context === undefined) throw new Error("no UpstreamTlsContext");
      context["snii"] = context["sni"];
      expect(() => validate(config)).toThrow(/snii/);
      const secrets = sds();
      const [certificate] = secrets["resources"] as Node[];
      (certificate?.["tls_certificate"] as Node)["private_keys"] = { filename: "/etc/envoy-tls/envoy.key" };
      expect(() => validateAs("envoy.service.discovery.v3.DiscoveryResponse", secrets)).toThrow(/private_keys/);
    });
  });
});
