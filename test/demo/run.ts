// `npm run demo`: four engine simulators, the sidecar, and a stand-in for Envoy that drives the
// sidecar over ext_proc exactly as Envoy does. A burst of streaming chat requests with mixed
// prompt lengths goes through the stand-in twice: once picked by the sidecar, once round robin
// (the same path, each request pinned to the next engine by a subset hint of one). It prints
// where each went, the load view, and the time to first token of both side by side.
import { ENGINE_HEADER } from "../engine-sim/engine.js";
import type { EnvoyStandIn } from "../envoy/proxy.js";
import { quantile } from "../bench/store/figures.js";
import { MODEL, POOL, startDemoCluster } from "./cluster.js";

const REQUESTS = 48;
const STAGGER_MS = 10;

interface Outcome {
  index: number;
  promptWords: number;
  engine: string;
  status: number;
  ttftMs: number;
  totalMs: number;
}

interface EngineRow {
  endpoint: string;
  queued_req_num: number;
  prefill_req_num: number;
  prompt_length: number;
  tokens_held: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Every fifth request carries a long document; the rest are short questions. */
const promptWordsOf = (index: number): number => (index % 5 === 0 ? 3000 : 40 + ((index * 37) % 200));

/** `run` opens every prompt, so the second burst finds nothing of the first in the engines' prefix caches. */
async function send(url: string, run: string, index: number): Promise<Outcome> {
  const promptWords = promptWordsOf(index);
  const body = JSON.stringify({
    model: MODEL,
    stream: true,
    max_tokens: 24,
    messages: [
      { role: "system", content: `${run}, request ${index}. You are a helpful assistant.` },
      { role: "user", content: `${"please summarise this text ".repeat(promptWords / 4)}` },
    ],
  });
  const started = performance.now();
  const response = await fetch(`${url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body });
  let ttftMs = -1;
  const reader = response.body!.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (ttftMs < 0 && value.length > 0) ttftMs = performance.now() - started;
  }
  return { index, promptWords, engine: response.headers.get(ENGINE_HEADER) ?? "?", status: response.status, ttftMs, totalMs: performance.now() - started };
}

async function loadView(httpPort: number): Promise<EngineRow[]> {
  const response = await fetch(`http://127.0.0.1:${httpPort}/v1/load/stats?cluster=${POOL}`);
  return ((await response.json()) as { data: EngineRow[] }).data;
}

function printLoad(title: string, rows: EngineRow[], label: (endpoint: string) => string): void {
  console.log(`\n${title}`);
  console.log("  engine  in flight  in prefill  prefill tokens  tokens held");
  for (const row of rows) {
    console.log(
      `  ${label(row.endpoint).padEnd(6)}  ${String(row.queued_req_num).padStart(9)}  ${String(row.prefill_req_num).padStart(10)}` +
        `  ${String(row.prompt_length).padStart(14)}  ${String(row.tokens_held).padStart(11)}`,
    );
  }
}

/** One burst: request i goes to `target(i)`, one every STAGGER_MS; `during` runs halfway through. */
async function burst(run: string, target: (index: number) => string, during?: () => Promise<void>): Promise<Outcome[]> {
  const pending: Promise<Outcome>[] = [];
  for (let i = 0; i < REQUESTS; i++) {
    pending.push(send(target(i), run, i));
    if (i === REQUESTS / 2) await during?.();
    await sleep(STAGGER_MS);
  }
  return Promise.all(pending);
}

async function main(): Promise<void> {
  const cluster = await startDemoCluster({ engines: 4, httpPort: 0, envoyPort: 0, logLevel: "warn" });
  const { engines, sidecar, envoy } = cluster;
  const label = (endpoint: string) => `E${engines.findIndex((engine) => engine.address === endpoint) + 1}`;
  console.log(`engines: ${engines.map((engine, i) => `E${i + 1}=${engine.address}`).join("  ")} (Llama-3.1-8B on an H100, simulated)`);
  console.log(`sidecar: ext_proc 127.0.0.1:${sidecar.ports.extproc}, HTTP 127.0.0.1:${sidecar.ports.http}; Envoy stand-in ${envoy.url}`);
  console.log(`sending ${REQUESTS} streaming chat requests, one every ${STAGGER_MS} ms; every fifth has a ~3,000-word prompt`);

  const snapshots: Array<[string, EngineRow[]]> = [];
  const ours = await burst("Run A", () => envoy.url, async () => {
    snapshots.push([`load view mid-burst (after ${REQUESTS / 2 + 1} requests)`, await loadView(sidecar.ports.http)]);
  });
  snapshots.push(["load view at the end of the burst", await loadView(sidecar.ports.http)]);

  console.log("\n  req  prompt words  engine  status  first token ms  total ms");
  for (const o of ours) {
    console.log(
      `  ${String(o.index).padStart(3)}  ${String(o.promptWords).padStart(12)}  ${label(o.engine).padEnd(6)}  ${String(o.status).padStart(6)}` +
        `  ${o.ttftMs.toFixed(0).padStart(14)}  ${o.totalMs.toFixed(0).padStart(8)}`,
    );
  }
  for (const [title, rows] of snapshots) printLoad(title, rows, label);
  await sleep(50);
  printLoad("load view after all requests finished (every counter back at zero)", await loadView(sidecar.ports.http), label);

  console.log("\nthe same burst again, round robin: request i pinned to engine i mod 4 (same sidecar and path, its choice overruled)…");
  const pinned: EnvoyStandIn[] = await Promise.all(engines.map((engine) => cluster.pinnedTo(engine)));
  const roundRobin = await burst("Run B", (index) => pinned[index % pinned.length]!.url);

  const line = (name: string, outcomes: Outcome[]): string => {
    const ttft = outcomes.map((o) => o.ttftMs);
    const mean = ttft.reduce((sum, value) => sum + value, 0) / ttft.length;
    const perEngine = engines.map((engine, i) => `E${i + 1} ${outcomes.filter((o) => o.engine === engine.address).length}`).join(" ");
    const longs = engines.map((engine, i) => `E${i + 1} ${outcomes.filter((o) => o.engine === engine.address && o.promptWords >= 3000).length}`).join(" ");
    return `  ${name.padEnd(16)} ${mean.toFixed(0).padStart(6)} ${quantile(ttft, 0.5).toFixed(0).padStart(6)} ${quantile(ttft, 1).toFixed(0).padStart(6)}   ${perEngine}   long prompts: ${longs}`;
  };
  console.log("\ntime to first token, ms: mean, p50, max; requests per engine");
  console.log(line("metadata-center", ours));
  console.log(line("round robin", roundRobin));
  const mean = (outcomes: Outcome[]): number => outcomes.reduce((sum, o) => sum + o.ttftMs, 0) / outcomes.length;
  const ratio = mean(roundRobin) / mean(ours);
  console.log(
    `\nwhat to look at: the mean time to first token, here ${ratio.toFixed(2)}× round robin's ${ratio >= 1 ? "(lower is better: the sidecar's)" : "(round robin did better on this burst)"}.` +
      "\nThe sidecar counts the prompt tokens each engine is prefilling and sends a request where the least is ahead of it; round" +
      "\nrobin takes turns blind to that, so a short question can wait behind a long prefill, or spreads perfectly when the burst" +
      "\nhappens to rotate with the engines. One short burst is one draw: npm run bench:routing compares the policies over" +
      "\nthousands of requests, four workloads and three loads.",
  );
  await cluster.close();
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
