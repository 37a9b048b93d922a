import parsePrometheus from "parse-prometheus-text-format";
import { describe, expect, it } from "vitest";
import { Metrics } from "../../src/api/metrics.js";
import { MemoryLoadStore } from "../../src/load/memory-store.js";
import { PoolDirectory } from "../../src/pools/pools.js";
import type { Family } from "../support/prometheus.js";
import { read } from "./manifests.js";

interface Panel {
  title: string;
  targets: Array<{ expr: string }>;
}

const dashboard = JSON.parse(read("deploy/grafana/metadata-center.json")) as { uid: string; panels: Panel[] };

/** What the sidecar's /metrics holds once it has seen a little of everything: family → its label names. */
async function exported(): Promise<Map<string, Set<string>>> {
  const store = new MemoryLoadStore();
  store.reserve({ id: "r", pool: "p", engine: "10.0.0.1:8000", promptTokens: 10 });
  const metrics = new Metrics({ store, directory: () => new PoolDirectory([{ name: "p", models: ["m"], endpoints: ["10.0.0.1:8000"] }]), storeFallback: () => false });
  metrics.picked("p", "10.0.0.1:8000", 10);
  metrics.refused("rate_limit_exceeded", "p");
  metrics.firstToken(0.1);
  metrics.observePick(0.001, "routed");
  metrics.observeQueue("p", 0);
  metrics.observeExpired(1);
  const families = parsePrometheus(await metrics.text()) as Family[];
  return new Map(
    families.map((family) => [family.name, new Set(family.metrics.flatMap((sample) => Object.keys(sample.labels ?? {})).concat(family.type === "HISTOGRAM" ? ["le"] : []))]),
  );
}

/** The metric families a query reads (a histogram by its _bucket series), and the labels it groups by. */
function readsOf(expr: string): { families: string[]; labels: string[] } {
  const families = [...expr.matchAll(/\b(metadata_center_[a-z_]+)/g)].map(([, name = ""]) => name.replace(/_bucket$/, ""));
  const labels = [...expr.matchAll(/by \(([^)]*)\)/g)].flatMap(([, list = ""]) => list.split(",").map((label) => label.trim()));
  return { families, labels };
}

describe("deploy/grafana/metadata-center.json", () => {
  it("queries only metrics the sidecar exports, grouped by labels they carry", async () => {
    const metrics = await exported();
    expect(dashboard.panels.length).toBeGreaterThan(5);
    for (const panel of dashboard.panels) {
      expect(panel.targets.length, panel.title).toBeGreaterThan(0);
      for (const { expr } of panel.targets) {
        const { families, labels } = readsOf(expr);
        expect(families.length, expr).toBeGreaterThan(0);
        for (const family of families) {
          const carried = metrics.get(family);
          expect(carried, `${panel.title}: ${family} is not exported`).toBeDefined();
          // `instance` is Prometheus's own label, added at scrape time.
          for (const label of labels.filter((label) => label !== "instance")) expect(carried, `${panel.title}: ${family} has no label ${label}`).toContain(label);
        }
      }
    }
  });

  it("is importable: a uid, panels with distinct ids and a place on the grid", () => {
    expect(dashboard.uid).toBe("metadata-center");
    const panels = dashboard.panels as Array<Panel & { id: number; gridPos: { x: number; y: number; w: number; h: number } }>;
    expect(new Set(panels.map((panel) => panel.id)).size).toBe(panels.length);
    for (const { gridPos } of panels) expect(gridPos.x + gridPos.w).toBeLessThanOrEqual(24);
  });
});
