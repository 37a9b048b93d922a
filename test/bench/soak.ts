// `npm run bench:soak`: a million random exchanges (BENCH_SOAK_EXCHANGES to change) through the
// built sidecar in its own process, with the Envoy-faithful client: normal streams and JSON,
// client resets at every point, upstream errors and resets, unreachable engines (Envoy's local
// reply), clients that time out, malformed and hostile streams, odd paths and bad bodies. At the
// end every counter must be back at zero (drift 0), and the sidecar's memory after warm-up must
// not have grown by more than 5 %. A benchmark, not a test: it prints its figures and met/MISSED.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { mulberry32 } from "../support/random.js";
import { EnvoyExtProcClient, RESET_POINTS, type ExchangeSpec, type Upstream } from "../envoy/ext-proc-client.js";
import { BenchRun } from "./report.js";
import { rssMb } from "./process-stats.js";

const root = new URL("../..", import.meta.url).pathname;
const EXCHANGES = Number(process.env["BENCH_SOAK_EXCHANGES"] ?? 1_000_000);
const CONCURRENCY = Number(process.env["BENCH_CONCURRENCY"] ?? 64);
const WARM_UP = Math.min(50_000, Math.floor(EXCHANGES / 10));
const SEED = Number(process.env["BENCH_SEED"] ?? 1);
const MAX_GROWTH = 0.05;

const delta = (content: string) => `data: {"choices":[{"index":0,"delta":{"content":"${content}"}}]}\n\n`;
const usage = (prompt: number | string, completion: number | string) => `data: {"choices":[],"usage":{"prompt_tokens":${prompt},"completion_tokens":${completion}}}\n\n`;
const deep = `data: {"error": ${"[".repeat(20_000)}${"]".repeat(20_000)}}\n\n`;

function stream(chunks: readonly string[], options: { status?: number; contentType?: string; failAfter?: number } = {}): Upstream {
  return async () => ({
    status: options.status ?? 200,
    headers: { "content-type": options.contentType ?? "text/event-stream" },
    body: (async function* () {
      for (let i = 0; i < chunks.length; i++) {
        if (i === options.failAfter) throw new Error("upstream reset");
        yield chunks[i]!;
      }
    })(),
  });
}

const slow: Upstream = async (request) => {
  await new Promise((resolve) => setTimeout(resolve, 100));
  if (request.signal.aborted) throw new Error("reset");
  return stream([delta("late"), "data: [DONE]\n\n"])(request);
};

const chatBody = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ model: "soak", messages: [{ role: "user", content: "How do engines share a burst?" }], ...extra });

type Kind = { name: string; weight: number; spec: (random: () => number) => Omit<ExchangeSpec, "upstream"> & { upstream: Upstream } };

const post = (path: string, body: string) => ({ method: "POST", path, headers: { "content-type": "application/json" }, body });

const KINDS: Kind[] = [
  { name: "stream", weight: 30, spec: () => ({ request: post("/v1/chat/completions", chatBody({ stream: true })), upstream: stream([delta("a"), delta("b"), usage(12, 2), "data: [DONE]\n\n"]) }) },
  { name: "json", weight: 10, spec: () => ({ request: post("/v1/chat/completions", chatBody()), upstream: stream(['{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1}}'], { contentType: "application/json" }) }) },
  {
    name: "client reset",
    weight: 15,
    spec: (random) => {
      const at = RESET_POINTS[Math.floor(random() * RESET_POINTS.length)]!;
      return { request: post("/v1/chat/completions", chatBody({ stream: true })), upstream: stream([delta("a"), delta("b"), "data: [DONE]\n\n"]), reset: (point) => point.at === at };
    },
  },
  { name: "upstream 5xx", weight: 6, spec: () => ({ request: post("/v1/chat/completions", chatBody()), upstream: stream(['{"error":{"message":"overloaded"}}'], { status: 503, contentType: "application/json" }) }) },
  { name: "upstream reset mid-stream", weight: 6, spec: () => ({ request: post("/v1/chat/completions", chatBody({ stream: true })), upstream: stream([delta("a"), delta("b"), delta("c")], { failAfter: 2 }) }) },
  { name: "upstream reset before headers", weight: 3, spec: () => ({ request: post("/v1/chat/completions", chatBody()), upstream: () => Promise.reject(new Error("reset")) }) },
  { name: "unreachable (local reply)", weight: 4, spec: () => ({ request: post("/v1/chat/completions", chatBody()), upstream: async () => "unreachable" as const }) },
  { name: "client timeout", weight: 1, spec: () => ({ request: post("/v1/chat/completions", chatBody({ stream: true })), upstream: slow, timeoutMs: 30 }) },
  {
    name: "malformed stream",
    weight: 8,
    spec: (random) => {
      const chunks = [
        [delta("x"), "data: {not json\n\n", "\u0000\u00ff garbage", "data: [DONE]\n\n"],
        [delta("x"), deep, "data: [DONE]\n\n"],
        [delta("x"), usage("1e400", 3), usage(-4, "2.5"), "data: [DONE]\n\n"],
        [delta("x"), "event: error\ndata: {\"error\": {\"message\": \"boom\"}}\n\n"],
      ][Math.floor(random() * 4)]!;
      return { request: post("/v1/chat/completions", chatBody({ stream: true })), upstream: stream(chunks) };
    },
  },
  {
    name: "odd path",
    weight: 8,
    spec: (random) => {
      const path = ["/v1/chat/%63ompletions", "//v1/chat/completions", "/v1/chat/completions/", "/v1/unknown", "/tokenize", "/v1/chat/completions?x=%zz"][Math.floor(random() * 6)]!;
      return { request: post(path, chatBody()), upstream: stream(['{"choices":[]}'], { contentType: "application/json" }) };
    },
  },
  {
    name: "bad body",
    weight: 9,
    spec: (random) => {
      const body = ['{"model": "soak", "messages": [', '{"messages": []}', '{"model": "nobody-serves-this", "messages": []}', `{"model": "soak", "messages": [], "tools": [${"[".repeat(50_000)}${"]".repeat(50_000)}]}`, "\u00ff\u00fe"][Math.floor(random() * 5)]!;
      return { request: post("/v1/chat/completions", body), upstream: stream(['{"choices":[]}'], { contentType: "application/json" }) };
    },
  },
];

const totalWeight = KINDS.reduce((sum, kind) => sum + kind.weight, 0);
function draw(random: () => number): Kind {
  let at = random() * totalWeight;
  for (const kind of KINDS) if ((at -= kind.weight) < 0) return kind;
  return KINDS[0]!;
}


/** Open reservations and the sum of every engine's numbers, from the sidecar's own view. */
async function counters(httpPort: number): Promise<{ ledger: number; requests: number; prefillRequests: number; prefillTokens: number; tokensHeld: number }> {
  const view = (await (await fetch(`http://127.0.0.1:${httpPort}/debug/pools`)).json()) as {
    data: { ledger: number; pools: Array<{ engines: Array<{ requests: number; prefill_requests: number; prefill_tokens: number; tokens_held: number }> }> };
  };
  const total = { ledger: view.data.ledger, requests: 0, prefillRequests: 0, prefillTokens: 0, tokensHeld: 0 };
  for (const pool of view.data.pools) {
    for (const engine of pool.engines) {
      total.requests += engine.requests;
      total.prefillRequests += engine.prefill_requests;
      total.prefillTokens += engine.prefill_tokens;
      total.tokensHeld += engine.tokens_held;
    }
  }
  return total;
}

/** Engines that accept connections (so the sidecar's probes find them up); the traffic itself is played in-process. */
async function listeners(count: number): Promise<{ addresses: string[]; servers: Server[] }> {
  const servers = await Promise.all(
    Array.from({ length: count }, () => new Promise<Server>((resolve) => {
      const server = createServer((socket) => socket.destroy());
      server.listen(0, "127.0.0.1", () => resolve(server));
    })),
  );
  return { servers, addresses: servers.map((server) => `127.0.0.1:${(server.address() as { port: number }).port}`) };
}

async function main(): Promise<void> {
  const run = new BenchRun("bench:soak", "random and broken exchanges against one sidecar: counters back at zero, memory not growing");
  const { addresses, servers } = await listeners(4);
  let done = 0;
  const dir = mkdtempSync(join(tmpdir(), "mc-soak-"));
  const config = join(dir, "soak.yaml");
  writeFileSync(config, `log: { level: error }\nextproc: { port: 0 }\nhealth: { port: 0 }\nhttp: { port: 0 }\npools: [{ name: soak, models: [soak], endpoints: [${addresses.map((a) => `"${a}"`).join(", ")}] }]\n`);
  // --trace-gc prints the heap after each collection: what a full (mark-compact) one leaves is the live memory.
  // SIGUSR2 makes the sidecar write a heap snapshot (into the temp folder), which starts with a full collection.
  const child = spawn(process.execPath, ["--trace-gc", "--heapsnapshot-signal=SIGUSR2", join(root, "dist/main.js"), "serve", "--config", config, "--log-level", "info"], {
    cwd: dir,
    stdio: ["ignore", "pipe", "inherit"],
  });
  // Stopped by hand (Ctrl-C, a timeout), the bench takes its sidecar with it.
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      child.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
      process.exit(130);
    });
  }
  const fullCollections: number[] = [];
  /** The heap a full collection leaves now: the one the heap snapshot starts with. */
  const liveMemory = async (): Promise<number | undefined> => {
    const before = fullCollections.length;
    child.kill("SIGUSR2");
    for (let waited = 0; waited < 60_000 && fullCollections.length === before; waited += 100) await new Promise((resolve) => setTimeout(resolve, 100));
    return fullCollections.at(-1);
  };
  const ports = await new Promise<{ extproc: number; http: number }>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      const collected = / Mark-Compact (?:\([^)]*\) )?[\d.]+ \([\d.]+\) -> ([\d.]+) \(/.exec(line);
      if (collected !== null) fullCollections.push(Number(collected[1]));
      if (!line.startsWith("{")) return;
      const entry = JSON.parse(line) as { extproc?: number; http?: number };
      if (entry.extproc !== undefined && entry.http !== undefined) resolve({ extproc: entry.extproc, http: entry.http });
    });
    child.on("exit", (code) => reject(new Error(`sidecar exited with ${code}`)));
  });
  let crashed: number | null | undefined;
  child.on("exit", (code) => (crashed = code));

  const client = new EnvoyExtProcClient(`127.0.0.1:${ports.extproc}`);
  const random = mulberry32(SEED);
  const byKind = new Map<string, number>();
  let next = 0;
  let warmRss: number | undefined;
  let warmLive: number | undefined;
  const started = performance.now();
  const progress = setInterval(() => {
    const seconds = (performance.now() - started) / 1000;
    run.progress(`${done.toLocaleString("en")} / ${EXCHANGES.toLocaleString("en")} exchanges, ${Math.round(done / seconds)}/s, sidecar RSS ${rssMb(child.pid!).toFixed(0)} MB`);
  }, 10_000);
  run.progress(`${EXCHANGES.toLocaleString("en")} random exchanges, ${CONCURRENCY} at a time, seed ${SEED}…`);
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < EXCHANGES && crashed === undefined) {
        next += 1;
        const kind = draw(random);
        byKind.set(kind.name, (byKind.get(kind.name) ?? 0) + 1);
        await client.exchange(kind.spec(random));
        done += 1;
        if (done === WARM_UP) {
          warmRss = rssMb(child.pid!);
          warmLive = await liveMemory();
        }
      }
    }),
  );
  clearInterval(progress);
  const seconds = (performance.now() - started) / 1000;
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const endRss = rssMb(child.pid!);
  const endLive = await liveMemory();
  const left = crashed === undefined ? await counters(ports.http) : undefined;
  client.close();
  child.kill("SIGTERM");
  await new Promise((resolve) => child.once("exit", resolve));
  for (const server of servers) server.close();
  rmSync(dir, { recursive: true, force: true });

  console.log(`\n${done.toLocaleString("en")} exchanges in ${seconds.toFixed(0)} s (${Math.round(done / seconds)}/s):`);
  for (const kind of KINDS) console.log(`  ${kind.name.padEnd(30)} ${(byKind.get(kind.name) ?? 0).toLocaleString("en")}`);
  if (left === undefined) {
    run.target(false, `sidecar exited during the run (code ${String(crashed)})`);
    run.finish();
    process.exitCode = 1;
    return;
  }
  const drift = left.ledger + Math.abs(left.requests) + Math.abs(left.prefillRequests) + Math.abs(left.prefillTokens) + Math.abs(left.tokensHeld);
  run.target(drift === 0, `drift at the end: ledger ${left.ledger}, requests ${left.requests}, prefill requests ${left.prefillRequests}, prefill tokens ${left.prefillTokens}, tokens held ${left.tokensHeld} (target 0)`);
  console.log(`sidecar RSS after warm-up (${WARM_UP.toLocaleString("en")} exchanges) ${warmRss?.toFixed(1) ?? "?"} MB, at the end ${endRss.toFixed(1)} MB`);
  if (warmLive === undefined || endLive === undefined) {
    run.target(false, "live memory: no full collection seen after a heap snapshot");
    run.finish();
    process.exitCode = 1;
    return;
  }
  const growth = (endLive - warmLive) / warmLive;
  run.target(
    growth <= MAX_GROWTH,
    `live memory (heap after a full collection) after warm-up ${warmLive.toFixed(1)} MB, at the end ${endLive.toFixed(1)} MB: growth ${(growth * 100).toFixed(1)} % (target ≤ ${MAX_GROWTH * 100} %)`,
  );
  run.finish();
  if (drift !== 0 || growth > MAX_GROWTH) process.exitCode = 1;
}

await main();
