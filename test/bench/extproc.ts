// `npm run bench:extproc`: full FULL_DUPLEX_STREAMED exchanges (2 KB chat prompt, 200-chunk SSE
// response) driven by the Envoy-faithful client over loopback, against the sidecar and against
// a bare grpc-js echo server carrying the same messages (the floor). Both run as their own
// processes so their CPU and memory are measured alone. A benchmark, not a test: it prints.
import { spawn, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { ProcessingRequest, ProcessingResponse } from "../../src/extproc/messages.js";
import { EnvoyExtProcClient, type ExchangeResult, type Upstream } from "../envoy/ext-proc-client.js";
import { histogramBuckets, quantileBetween } from "./prometheus.js";
import { tempFolder } from "../support/temp.js";
import { BenchRun } from "./report.js";
import { cpuSeconds, rssMb } from "./process-stats.js";

const root = new URL("../..", import.meta.url).pathname;
const EXCHANGES = Number(process.env["BENCH_EXCHANGES"] ?? 3000);
const CONCURRENCY = Number(process.env["BENCH_CONCURRENCY"] ?? 64);
const SSE_CHUNKS = 200;

const prompt = JSON.stringify({
  model: "bench",
  stream: true,
  messages: [{ role: "user", content: "Summarise the following report in three bullet points. ".repeat(36) }],
});
const sseChunks = Array.from({ length: SSE_CHUNKS }, (_, i) =>
  Buffer.from(`data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"tok${i} "}}]}\n\n`),
);

interface Target {
  name: string;
  child: ChildProcess;
  port: number;
  /** The sidecar's HTTP port (for /metrics); the floor has none. */
  httpPort?: number;
}

async function startTarget(name: string, command: string, args: string[]): Promise<Target> {
  const child = spawn(command, args, { cwd: root, stdio: ["ignore", "pipe", "inherit"] });
  const ports = await new Promise<{ extproc: number; http?: number }>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      const entry = JSON.parse(line) as { extproc?: number; http?: number };
      if (entry.extproc !== undefined) resolve({ extproc: entry.extproc, http: entry.http });
    });
    child.on("exit", (code) => reject(new Error(`${name} exited with ${code}`)));
  });
  return { name, child, port: ports.extproc, httpPort: ports.http };
}



/** An engine answering at once with the 200-chunk stream; `hold` keeps it open midway until released. */
function benchUpstream(hold?: Promise<void>): Upstream {
  return async () => ({
    status: 200,
    headers: { "content-type": "text/event-stream" },
    body: (async function* () {
      for (let i = 0; i < sseChunks.length; i++) {
        if (i === 1 && hold) await hold;
        yield sseChunks[i]!;
      }
    })(),
    ending: "eos-on-last",
  });
}

/** Body end → headers reply, from the client's own message log. */
function pickLatencyMs(result: ExchangeResult): number | undefined {
  let bodyEnd: number | undefined;
  for (const entry of result.log) {
    const message = entry.message;
    if (message === undefined) continue;
    if (entry.direction === "sent" && (message as ProcessingRequest).requestBody?.endOfStream) bodyEnd = entry.ms;
    if (entry.direction === "received" && (message as ProcessingResponse).requestHeaders && bodyEnd !== undefined) {
      return entry.ms - bodyEnd;
    }
  }
  return undefined;
}

const percentile = (values: number[], p: number): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
};

async function throughput(target: Target): Promise<{ perSecond: number; messagesPerSecond: number; cpuMsPerExchange: number }> {
  const client = new EnvoyExtProcClient(`127.0.0.1:${target.port}`);
  const run = async (count: number) => {
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < count) {
          next += 1;
          const result = await client.exchange({ request: { method: "POST", path: "/v1/chat/completions", body: prompt }, upstream: benchUpstream() });
          if (result.status !== 200 || result.failure) throw new Error(`${target.name}: exchange failed: ${JSON.stringify(result.failure)}`);
        }
      }),
    );
  };
  await run(Math.min(300, EXCHANGES)); // warm up
  const cpuBefore = cpuSeconds(target.child.pid!);
  const started = performance.now();
  await run(EXCHANGES);
  const seconds = (performance.now() - started) / 1000;
  const cpu = cpuSeconds(target.child.pid!) - cpuBefore;
  client.close();
  // Per exchange the processor receives headers + 1 body + headers + 200 chunks and sends as many.
  const messages = EXCHANGES * (3 + SSE_CHUNKS) * 2;
  return { perSecond: EXCHANGES / seconds, messagesPerSecond: messages / seconds, cpuMsPerExchange: (cpu * 1000) / EXCHANGES };
}

/** Holds `open` exchanges midway through their responses; returns a release function. */
async function holdOpen(client: EnvoyExtProcClient, open: number): Promise<{ release: () => Promise<void> }> {
  let release!: () => void;
  const hold = new Promise<void>((resolve) => (release = resolve));
  let started!: () => void;
  const allStarted = new Promise<void>((resolve) => (started = resolve));
  let count = 0;
  let ended = 0;
  const upstream: Upstream = async (request) => {
    count += 1;
    if (count + ended >= open) started();
    return benchUpstream(hold)(request);
  };
  const exchanges = Array.from({ length: open }, () =>
    client.exchange({ request: { method: "POST", path: "/v1/chat/completions", body: prompt }, upstream, timeoutMs: 0 }).then((result) => {
      ended += 1;
      if (count + ended >= open) started();
      return result;
    }),
  );
  await allStarted;
  if (ended > 0) console.log(`  (${ended} of ${open} exchanges ended before reaching the engine)`);
  return {
    release: async () => {
      release();
      await Promise.all(exchanges);
    },
  };
}

const PICK_HISTOGRAM = "metadata_center_pick_latency_seconds";

interface Latency {
  p50: number;
  p99: number;
  /** Measured inside the sidecar (its histogram's bucket bounds), without the client and transport. */
  inside?: { p50: number; p99: number };
}

async function pickLatency(target: Target, open: number, samples: number): Promise<Latency> {
  const client = new EnvoyExtProcClient(`127.0.0.1:${target.port}`);
  const held = await holdOpen(client, open);
  const metricsUrl = target.httpPort === undefined ? undefined : `http://127.0.0.1:${target.httpPort}/metrics`;
  const before = metricsUrl === undefined ? undefined : await histogramBuckets(metricsUrl, PICK_HISTOGRAM);
  const latencies: number[] = [];
  for (let i = 0; i < samples; i++) {
    const result = await client.exchange({ request: { method: "POST", path: "/v1/chat/completions", body: prompt }, upstream: benchUpstream() });
    const latency = pickLatencyMs(result);
    if (latency !== undefined) latencies.push(latency);
  }
  const after = metricsUrl === undefined ? undefined : await histogramBuckets(metricsUrl, PICK_HISTOGRAM);
  await held.release();
  client.close();
  const inside =
    before === undefined || after === undefined
      ? undefined
      : { p50: quantileBetween(before, after, 0.5) * 1000, p99: quantileBetween(before, after, 0.99) * 1000 };
  return { p50: percentile(latencies, 50), p99: percentile(latencies, 99), inside };
}

/** Like Envoy's worker threads, several connections, each well within a connection's stream budget. */
const CONNECTIONS_FOR_RSS = 8;

/** RSS with `open` exchanges held open at once, in MB. */
async function rssWithOpen(target: Target, open: number): Promise<number> {
  const clients = Array.from({ length: CONNECTIONS_FOR_RSS }, () => new EnvoyExtProcClient(`127.0.0.1:${target.port}`));
  const held = await Promise.all(clients.map((client) => holdOpen(client, open / CONNECTIONS_FOR_RSS)));
  await new Promise((resolve) => setTimeout(resolve, 500));
  const loaded = rssMb(target.child.pid!);
  await Promise.all(held.map((h) => h.release()));
  for (const client of clients) client.close();
  return loaded;
}

async function main(): Promise<void> {
  const run = new BenchRun("bench:extproc", "ext_proc throughput against a bare grpc-js floor, pick latency, memory");
  const config = join(tempFolder("mc-bench-"), "bench.yaml");
  const engines = Array.from({ length: 8 }, (_, i) => `"127.0.0.1:${i + 1}"`).join(", ");
  writeFileSync(config, `log: { level: warn }\nextproc: { port: 0 }\nhealth: { port: 0 }\nhttp: { port: 0 }\npools: [{ name: bench, models: ["*"], endpoints: [${engines}] }]\n`);
  const sidecar = await startTarget("sidecar", process.execPath, [join(root, "dist/main.js"), "serve", "--config", config, "--log-level", "info"]);
  const floor = await startTarget("floor", process.execPath, ["--import", "tsx", join(root, "test/bench/floor-server.ts")]);
  // The sidecar logs one line per finished request at info; the bench keeps that cost in.
  sidecar.child.stdout!.resume();
  try {
    // Before any traffic: what the sidecar holds on its own.
    const idleRss = rssMb(sidecar.child.pid!);
    run.progress(`exchanges: ${EXCHANGES} per target, ${CONCURRENCY} at a time; 2 KB prompt, ${SSE_CHUNKS}-chunk SSE response; FULL_DUPLEX_STREAMED; the floor first…`);
    const floorRun = await throughput(floor);
    run.progress("the sidecar…");
    const sidecarRun = await throughput(sidecar);
    for (const [name, result] of [["floor (bare grpc-js echo)", floorRun], ["sidecar", sidecarRun]] as const) {
      console.log(
        `${name.padEnd(26)} ${result.perSecond.toFixed(0).padStart(6)} exchanges/s  ${result.messagesPerSecond.toFixed(0).padStart(7)} messages/s  ` +
          `${result.cpuMsPerExchange.toFixed(2)} ms CPU per exchange`,
      );
    }
    const share = sidecarRun.messagesPerSecond / floorRun.messagesPerSecond;
    run.target(share >= 0.6, `sidecar throughput = ${(share * 100).toFixed(0)} % of the floor (target ≥ 60 %)`);
    // On a small machine the load generator saturates first; CPU per exchange says what each
    // server could carry on a core of its own.
    console.log(
      `  by CPU per exchange, the sidecar's capacity is ${((floorRun.cpuMsPerExchange / sidecarRun.cpuMsPerExchange) * 100).toFixed(0)} % of the floor's`,
    );

    run.progress("pick latency with 500 exchanges open, the sidecar then the floor…");
    const latency = await pickLatency(sidecar, 500, 500);
    const floorLatency = await pickLatency(floor, 500, 500);
    console.log("pick latency (body end → headers reply), 500 exchanges open, 500 samples:");
    run.target(
      latency.inside !== undefined && latency.inside.p99 <= 2,
      `  inside the sidecar (histogram bucket bounds): p50 ≤ ${latency.inside?.p50} ms, p99 ≤ ${latency.inside?.p99} ms (target p99 ≤ 2 ms)`,
    );
    console.log(`  seen by the client, sidecar:                  p50 ${latency.p50.toFixed(2)} ms, p99 ${latency.p99.toFixed(2)} ms`);
    console.log(`  seen by the client, floor (no pick at all):   p50 ${floorLatency.p50.toFixed(2)} ms, p99 ${floorLatency.p99.toFixed(2)} ms`);

    run.progress("memory with 5,000 exchanges open…");
    const loadedRss = await rssWithOpen(sidecar, 5000);
    run.target(loadedRss <= 300, `sidecar RSS: ${idleRss.toFixed(0)} MB idle (before any traffic), ${loadedRss.toFixed(0)} MB with 5,000 exchanges open (target ≤ 300 MB)`);
    run.finish();
  } finally {
    sidecar.child.kill("SIGKILL");
    floor.child.kill("SIGKILL");
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
