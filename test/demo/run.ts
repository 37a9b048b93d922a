// `npm run demo`: four engine simulators, the sidecar, and a stand-in for Envoy that drives the
// sidecar over ext_proc exactly as Envoy does. A burst of streaming chat requests with mixed
// prompt lengths goes through the stand-in; the demo prints where each went and the load view.
import { parseConfig } from "../../src/config/load.js";
import { createLogger } from "../../src/log.js";
import { startSidecar } from "../../src/sidecar.js";
import { ENGINE_HEADER, LLAMA_8B_H100, startEngineSim } from "../engine-sim/engine.js";
import { startEnvoyStandIn } from "../envoy/proxy.js";

const MODEL = "meta-llama/Llama-3.1-8B-Instruct";
const REQUESTS = 32;
const STAGGER_MS = 25;

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

async function send(url: string, index: number): Promise<Outcome> {
  const promptWords = promptWordsOf(index);
  const body = JSON.stringify({
    model: MODEL,
    stream: true,
    max_tokens: 24,
    messages: [
      { role: "system", content: "You are a helpful assistant." },
      { role: "user", content: `Request ${index}: ${"please summarise this text ".repeat(promptWords / 4)}` },
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
  return {
    index,
    promptWords,
    engine: response.headers.get(ENGINE_HEADER) ?? "?",
    status: response.status,
    ttftMs,
    totalMs: performance.now() - started,
  };
}

async function loadView(httpPort: number): Promise<EngineRow[]> {
  const response = await fetch(`http://127.0.0.1:${httpPort}/v1/load/stats?cluster=llama-8b`);
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

async function main(): Promise<void> {
  const engines = await Promise.all(Array.from({ length: 4 }, () => startEngineSim({ model: LLAMA_8B_H100 })));
  const label = (endpoint: string) => `E${engines.findIndex((engine) => engine.address === endpoint) + 1}`;
  const config = parseConfig(
    JSON.stringify({
      extproc: { port: 0 },
      health: { port: 0 },
      http: { port: 0 },
      log: { level: "warn" },
      pools: [{ name: "llama-8b", models: [MODEL], endpoints: engines.map((engine) => engine.address) }],
    }),
    "demo",
  );
  const sidecar = await startSidecar(config, createLogger(config.log.level));
  const envoy = await startEnvoyStandIn({ extProcAddress: `127.0.0.1:${sidecar.ports.extproc}` });
  console.log(`engines: ${engines.map((engine, i) => `E${i + 1}=${engine.address}`).join("  ")}`);
  console.log(`sidecar: ext_proc 127.0.0.1:${sidecar.ports.extproc}, HTTP 127.0.0.1:${sidecar.ports.http}; Envoy stand-in ${envoy.url}`);
  console.log(`sending ${REQUESTS} streaming chat requests, one every ${STAGGER_MS} ms; every fifth has a ~3,000-word prompt`);

  const pending: Promise<Outcome>[] = [];
  const snapshots: Array<[string, EngineRow[]]> = [];
  for (let i = 0; i < REQUESTS; i++) {
    pending.push(send(envoy.url, i));
    if (i === REQUESTS / 2) snapshots.push([`load view mid-burst (after ${i + 1} requests)`, await loadView(sidecar.ports.http)]);
    await sleep(STAGGER_MS);
  }
  snapshots.push(["load view at the end of the burst", await loadView(sidecar.ports.http)]);
  const outcomes = await Promise.all(pending);

  console.log("\n  req  prompt words  engine  status  first token ms  total ms");
  for (const o of outcomes) {
    console.log(
      `  ${String(o.index).padStart(3)}  ${String(o.promptWords).padStart(12)}  ${label(o.engine).padEnd(6)}  ${String(o.status).padStart(6)}` +
        `  ${o.ttftMs.toFixed(0).padStart(14)}  ${o.totalMs.toFixed(0).padStart(8)}`,
    );
  }
  for (const [title, rows] of snapshots) printLoad(title, rows, label);
  await sleep(50);
  printLoad("load view after all requests finished (every counter back at zero)", await loadView(sidecar.ports.http), label);

  const perEngine = engines.map((engine, i) => `E${i + 1}: ${outcomes.filter((o) => o.engine === engine.address).length}`);
  const ttfts = outcomes.map((o) => o.ttftMs).sort((a, b) => a - b);
  console.log(`\nrequests per engine: ${perEngine.join("  ")}`);
  console.log(`time to first token: p50 ${ttfts[Math.floor(ttfts.length / 2)]!.toFixed(0)} ms, max ${ttfts[ttfts.length - 1]!.toFixed(0)} ms`);

  await envoy.close();
  await sidecar.stop(0);
  await Promise.all(engines.map((engine) => engine.close()));
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
