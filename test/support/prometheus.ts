import parsePrometheus from "parse-prometheus-text-format";

/** One series of a family as the parser gives it: a value, or a histogram's buckets. */
export interface Sample {
  labels?: Record<string, string>;
  value?: string;
  buckets?: Record<string, string>;
}

export interface Family {
  name: string;
  type: string;
  metrics: Sample[];
}

/** One `/metrics` scrape: the parsed families by name, and the text. */
export interface Scrape {
  families: Map<string, Family>;
  text: string;
}

export async function scrape(port: number): Promise<Scrape> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return { families: new Map((parsePrometheus(text) as Family[]).map((family) => [family.name, family])), text };
}

/** The series of a family whose labels include `labels`. */
export function series(scraped: Scrape, name: string, labels: Record<string, string> = {}): Sample[] {
  return (scraped.families.get(name)?.metrics ?? []).filter((sample) =>
    Object.entries(labels).every(([key, value]) => sample.labels?.[key] === value),
  );
}

/** The value of the one series matching `labels`, or undefined. */
export function valueOf(scraped: Scrape, name: string, labels: Record<string, string> = {}): number | undefined {
  const [sample, ...more] = series(scraped, name, labels);
  if (sample === undefined || more.length > 0) return undefined;
  return Number(sample.value);
}

/**
 * Observations of a histogram over all its label sets. The parser loses the label sets of
 * labelled histograms, so this sums the `_count` lines of the text instead.
 */
export function histogramCount(scraped: Scrape, name: string): number {
  const line = new RegExp(`^${name}_count(?:\\{[^}]*\\})? (\\S+)$`, "gm");
  return [...scraped.text.matchAll(line)].reduce((total, match) => total + Number(match[1]), 0);
}
