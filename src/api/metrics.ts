import { Histogram, Registry } from "prom-client";

/**
 * The sidecar's Prometheus metrics, one registry per sidecar (tests run several in one process).
 * Observations are cheap counters; the text is built only when `/metrics` is scraped.
 */
export class Metrics {
  readonly registry = new Registry();
  /** Body end → headers reply, inside the sidecar: parse, count tokens, pick and reserve. */
  private readonly pickLatency = new Histogram({
    name: "metadata_center_pick_latency_seconds",
    help: "Time from the end of the request body to the routing reply, in the sidecar",
    labelNames: ["outcome"] as const,
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1],
    registers: [this.registry],
  });

  observePick(seconds: number, outcome: "routed" | "refused"): void {
    this.pickLatency.observe({ outcome }, seconds);
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
