import parsePrometheus from "parse-prometheus-text-format";

interface Family {
  name: string;
  metrics: Array<{ buckets?: Record<string, string>; value?: string }>;
}

/** Cumulative bucket counts (upper bound → count) of a histogram, summed over its label sets. */
export async function histogramBuckets(url: string, name: string): Promise<Map<number, number>> {
  return (await scrapeOnce(url)).histogram(name);
}

/** One scrape, read for several families (a scrape resets what prom-client's event-loop gauges summarise). */
export async function scrapeOnce(url: string): Promise<{ histogram(name: string): Map<number, number>; gauge(name: string): number | undefined }> {
  const families = parsePrometheus(await (await fetch(url)).text()) as Family[];
  return {
    histogram: (name) => bucketsOf(families.find((f) => f.name === name)),
    gauge: (name) => {
      const value = families.find((f) => f.name === name)?.metrics[0]?.value;
      return value === undefined ? undefined : Number(value);
    },
  };
}

function bucketsOf(family: Family | undefined): Map<number, number> {
  const buckets = new Map<number, number>();
  for (const metric of family?.metrics ?? []) {
    for (const [le, count] of Object.entries(metric.buckets ?? {})) {
      const bound = le === "+Inf" ? Infinity : Number(le);
      buckets.set(bound, (buckets.get(bound) ?? 0) + Number(count));
    }
  }
  return buckets;
}

/** The q-quantile of the observations between two scrapes, as the upper bound of its bucket. */
export function quantileBetween(before: Map<number, number>, after: Map<number, number>, q: number): number {
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const total = (after.get(Infinity) ?? 0) - (before.get(Infinity) ?? 0);
  for (const bound of bounds) {
    if ((after.get(bound) ?? 0) - (before.get(bound) ?? 0) >= q * total) return bound;
  }
  return Infinity;
}

/** The share of the observations between two scrapes at or below `bound` (one of the histogram's bucket bounds). */
export function shareWithin(before: Map<number, number>, after: Map<number, number>, bound: number): number {
  const total = (after.get(Infinity) ?? 0) - (before.get(Infinity) ?? 0);
  return total === 0 ? NaN : ((after.get(bound) ?? 0) - (before.get(bound) ?? 0)) / total;
}
