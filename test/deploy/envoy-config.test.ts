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

/** Parses the bootstrap as Envoy would: unknown keys and enum values are refused, inside Any too. */
function validate(config: unknown): void {
  const bootstrap = registry.getMessage("envoy.config.bootstrap.v3.Bootstrap");
  if (bootstrap === undefined) throw new Error("Bootstrap is not in the image");
  fromJson(bootstrap, config as JsonValue, { registry });
}

const files = readdirSync(deployDir).filter((name) => name.endsWith(".yaml"));
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

describe("deploy/envoy", () => {
  it("holds the picker, observer and BUFFERED bootstraps", () => {
    expect(files.sort()).toEqual(["envoy-buffered.yaml", "envoy-observer.yaml", "envoy.yaml"]);
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
    expect(modes("envoy-observer.yaml")).toEqual([expect.objectContaining(duplex), expect.objectContaining(duplex)]);
    expect(modes("envoy-buffered.yaml")).toEqual([
      expect.objectContaining({ request_body_mode: "BUFFERED", response_body_mode: "STREAMED" }),
    ]);
  });
});
