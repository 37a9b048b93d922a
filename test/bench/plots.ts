import { Resvg } from "@resvg/resvg-js";
import { parse, View, type Spec } from "vega";

// PNG charts for the benchmarks: a Vega spec rendered to SVG headless (no canvas), then to PNG.

export interface Series {
  name: string;
  /** Points of the line, x ascending. */
  points: ReadonlyArray<{ x: number; y: number }>;
}

export interface LineChart {
  title: string;
  xTitle: string;
  yTitle: string;
  series: readonly Series[];
  /** A log scale on x (for latency distributions spanning orders of magnitude). */
  logX?: boolean;
}

/** One line per series, coloured by name, with a legend. */
function spec(chart: LineChart): Spec {
  const values = chart.series.flatMap(({ name, points }) => points.map(({ x, y }) => ({ name, x, y })));
  return {
    $schema: "https://vega.github.io/schema/vega/v6.json",
    width: 720,
    height: 360,
    padding: 10,
    background: "white",
    title: { text: chart.title, fontSize: 14 },
    data: [{ name: "points", values }],
    scales: [
      { name: "x", type: chart.logX === true ? "log" : "linear", domain: { data: "points", field: "x" }, range: "width", nice: true, zero: false },
      { name: "y", type: "linear", domain: { data: "points", field: "y" }, range: "height", nice: true, zero: true },
      { name: "color", type: "ordinal", domain: { data: "points", field: "name" }, range: "category" },
    ],
    axes: [
      { orient: "bottom", scale: "x", title: chart.xTitle, grid: true },
      { orient: "left", scale: "y", title: chart.yTitle, grid: true },
    ],
    legends: [{ stroke: "color", title: "", orient: "right", labelLimit: 320 }],
    marks: [
      {
        type: "group",
        from: { facet: { name: "line", data: "points", groupby: "name" } },
        marks: [
          {
            type: "line",
            from: { data: "line" },
            encode: {
              enter: {
                x: { scale: "x", field: "x" },
                y: { scale: "y", field: "y" },
                stroke: { scale: "color", field: "name" },
                strokeWidth: { value: 2 },
              },
            },
          },
        ],
      },
    ],
  };
}

export async function lineChartPng(chart: LineChart): Promise<Buffer> {
  const view = new View(parse(spec(chart)), { renderer: "none" });
  const svg = await view.toSVG();
  view.finalize();
  return new Resvg(svg, { fitTo: { mode: "width", value: 1100 }, font: { loadSystemFonts: true } }).render().asPng();
}

/** The empirical CDF of `values` as points (value, share at or below it), thinned to at most `points`. */
export function cdf(values: readonly number[], points = 200): Array<{ x: number; y: number }> {
  const sorted = [...values].sort((a, b) => a - b);
  const step = Math.max(1, Math.floor(sorted.length / points));
  const out: Array<{ x: number; y: number }> = [];
  for (let i = step - 1; i < sorted.length; i += step) out.push({ x: Math.max(sorted[i]!, 0.1), y: (i + 1) / sorted.length });
  return out;
}
