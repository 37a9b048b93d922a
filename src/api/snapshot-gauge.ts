import { Gauge, type MetricObjectWithValues, type MetricValue } from "prom-client";

/** One series: label values in the order of the gauge's label names, and its value. */
export interface Series {
  labels: readonly string[];
  value: number;
}

type Labels<T extends string> = Partial<Record<T, string>>;

/**
 * A gauge whose series are all produced at scrape time by `read`. With thousands of engines,
 * prom-client's own path (reset, `set` per series, then formatting every label set) took
 * ~3 ms per thousand series; here each label set is one object kept across scrapes, handed to
 * the registry as `sharedLabels`, which it formats once per object and caches.
 */
export class SnapshotGauge<T extends string> extends Gauge<T> {
  private labelSets = new Map<string, Labels<T>>();

  constructor(
    private readonly config: { name: string; help: string; labelNames: readonly T[]; registers: ConstructorParameters<typeof Gauge>[0]["registers"] },
    private readonly read: () => Promise<Iterable<Series>>,
  ) {
    super(config);
  }

  override async get(): Promise<MetricObjectWithValues<MetricValue<T>>> {
    const previous = this.labelSets;
    // Only the label sets of this scrape are kept, so engines that left do not pile up.
    this.labelSets = new Map();
    const values: Array<MetricValue<T> & { sharedLabels: Labels<T> }> = [];
    for (const series of await this.read()) {
      const key = series.labels.join("\u0000");
      let sharedLabels = previous.get(key) ?? this.labelSets.get(key);
      if (sharedLabels === undefined) {
        sharedLabels = {};
        this.config.labelNames.forEach((name, i) => (sharedLabels![name] = series.labels[i] ?? ""));
      }
      this.labelSets.set(key, sharedLabels);
      values.push({ value: series.value, labels: {}, sharedLabels });
    }
    // The parent gives name, help, type and aggregator; it holds no series of its own.
    return { ...(await super.get()), values };
  }
}
