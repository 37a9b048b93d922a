/**
 * Write-API throughput: each connection sends POST /v1/load/stats then DELETE /v1/load/stats
 * for a fresh request_id, over and over. The sidecar runs as its own process (`dist/main.js`,
 * built by `npm run bench:api`), so autocannon and the server each have a core; its CPU time
 * is read from /proc/<pid>/stat. Prints operations/s (an add and a delete are two operations),
 * latency percentiles and the sidecar's CPU time per operation.
 * BENCH_NODE_ARGS adds flags to the sidecar's node (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof").
 */
import autocannon from "autocannon";
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { tempFolder } from "../support/temp.js";
import { BenchRun } from "./report.js";
import { cpuSeconds } from "./process-stats.js";

const root = new URL("../..", import.meta.url).pathname;
// Ten connections, like a gateway's client pool: with many more, the saturated server's queue
// is all the tail latency measures (50 connections: p99 ~10 ms at the same throughput).
const CONNECTIONS = Number(process.env["BENCH_CONNECTIONS"] ?? 10);
const SECONDS = Number(process.env["BENCH_SECONDS"] ?? 10);

const run = new BenchRun("bench:api", `the v1 write API: ${CONNECTIONS} connections each adding and deleting a request, ${SECONDS} s`);
const config = join(tempFolder("mc-bench-api-"), "bench.yaml");
writeFileSync(
  config,
  `log: { level: info }\nextproc: { port: 0 }\nhealth: { port: 0 }\nhttp: { port: 0 }\n` +
    `pools: [{ name: bench, models: ["*"], endpoints: ["10.0.0.1:8000", "10.0.0.2:8000"] }]\n`,
);
const nodeArgs = (process.env["BENCH_NODE_ARGS"] ?? "").split(" ").filter((arg) => arg !== "");
const child = spawn(process.execPath, [...nodeArgs, join(root, "dist/main.js"), "serve", "--config", config], {
  cwd: root,
  stdio: ["ignore", "pipe", "inherit"],
});
const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
const port = await new Promise<number>((resolve, reject) => {
  createInterface({ input: child.stdout! }).on("line", (line) => {
    const entry = JSON.parse(line) as { msg?: string; http?: number; level?: number };
    if (entry.msg === "metadata-center serving" && entry.http !== undefined) resolve(entry.http);
    else if ((entry.level ?? 0) >= 40) console.error(line);
  });
  void exited.then((code) => reject(new Error(`sidecar exited with ${code}`)));
});
const base = `http://127.0.0.1:${port}`;


let sequence = 0;
const ips = ["10.0.0.1", "10.0.0.2"];
/** Ids added whose delete has not been answered yet: deleted after the run. */
const open = new Set<string>();

run.progress(`sidecar serving on ${base}; ${SECONDS} s of adds and deletes…`);
const cpuBefore = cpuSeconds(child.pid!);
const ownBefore = process.cpuUsage();
const result = await autocannon({
  url: base,
  connections: CONNECTIONS,
  duration: SECONDS,
  headers: { "content-type": "application/json" },
  requests: [
    {
      method: "POST",
      path: "/v1/load/stats",
      setupRequest: (request, context) => {
        sequence += 1;
        const id = `bench-${sequence}`;
        Object.assign(context, { id });
        open.add(id);
        const body = { cluster: "bench", request_id: id, prompt_length: 512, ip: ips[sequence % 2] };
        return { ...request, body: JSON.stringify(body) };
      },
    },
    {
      method: "DELETE",
      path: "/v1/load/stats",
      setupRequest: (request, context) => ({ ...request, body: JSON.stringify({ request_id: (context as { id: string }).id }) }),
      onResponse: (_status, _body, context) => void open.delete((context as { id: string }).id),
    },
  ],
});
const cpuUsed = cpuSeconds(child.pid!) - cpuBefore;
const own = process.cpuUsage(ownBefore);
const ownSeconds = (own.user + own.system) / 1e6;

// Requests cut off by the end of the run may leave an add without its delete: delete them now
// (a 404 means the delete had landed after all).
await Promise.all(
  [...open].map((id) => fetch(`${base}/v1/load/stats`, { method: "DELETE", body: JSON.stringify({ request_id: id }) }).then((r) => r.arrayBuffer())),
);
const metrics = await (await fetch(`${base}/metrics`)).text();
const ledger = Number(/^metadata_center_ledger_size (\S+)$/m.exec(metrics)?.[1] ?? NaN);
child.kill("SIGTERM");
await exited;

const seconds = result.duration || SECONDS;
const operations = result.requests.total;
console.log(`connections: ${CONNECTIONS}, duration: ${seconds.toFixed(1)} s, requests: ${operations}, non-2xx: ${result.non2xx}, errors: ${result.errors}`);
run.target(operations / seconds >= 10_000, `operations/s: ${(operations / seconds).toFixed(0)} (add+delete pairs/s: ${(operations / 2 / seconds).toFixed(0)}; target ≥ 10,000 operations/s)`);
run.target(result.latency.p99 <= 5, `latency (ms): p50 ${result.latency.p50}  p99 ${result.latency.p99}  max ${result.latency.max} (target p99 ≤ 5)`);
console.log(
  `sidecar CPU: ${cpuUsed.toFixed(2)} s over ${seconds.toFixed(1)} s (${((cpuUsed / seconds) * 100).toFixed(0)} % of a core), ` +
    `${((cpuUsed / operations) * 1e6).toFixed(0)} µs per operation`,
);
console.log(`load generator CPU: ${ownSeconds.toFixed(2)} s (${((ownSeconds / seconds) * 100).toFixed(0)} % of a core)`);
run.target(ledger === 0 && result.non2xx === 0 && result.errors === 0, `ledger back at zero (${ledger}), no non-2xx answer (${result.non2xx}), no error (${result.errors})`);
run.finish();
