/**
 * Write-API throughput: each connection sends POST /v1/load/stats then DELETE /v1/load/stats
 * for a fresh request_id, over and over. Prints add+delete pairs per second and latency
 * percentiles. The sidecar runs in this process (autocannon shares its CPU), so the figures
 * are a floor, not the server's ceiling.
 */
import autocannon from "autocannon";
import { idle, startTestSidecar, totalLoad } from "../support/sidecar.js";

const CONNECTIONS = 50;
const SECONDS = 10;

const sidecar = await startTestSidecar([{ name: "bench", models: ["*"], endpoints: ["10.0.0.1:8000", "10.0.0.2:8000"] }]);
let sequence = 0;
const ips = ["10.0.0.1", "10.0.0.2"];

const result = await autocannon({
  url: `http://127.0.0.1:${sidecar.ports.http}`,
  connections: CONNECTIONS,
  duration: SECONDS,
  headers: { "content-type": "application/json" },
  requests: [
    {
      method: "POST",
      path: "/v1/load/stats",
      setupRequest: (request, context) => {
        sequence += 1;
        Object.assign(context, { id: `bench-${sequence}` });
        const body = { cluster: "bench", request_id: `bench-${sequence}`, prompt_length: 512, ip: ips[sequence % 2] };
        return { ...request, body: JSON.stringify(body) };
      },
    },
    {
      method: "DELETE",
      path: "/v1/load/stats",
      setupRequest: (request, context) => ({ ...request, body: JSON.stringify({ request_id: (context as { id: string }).id }) }),
    },
  ],
});

// Requests cut off by the end of the run may leave an add without its delete: expire them.
await sidecar.store.expire(0);
const load = await totalLoad(sidecar);
await sidecar.stop(0);

const pairs = result.requests.total / 2 / (result.duration || SECONDS);
console.log(`connections: ${CONNECTIONS}, duration: ${result.duration.toFixed(1)} s, requests: ${result.requests.total}, non-2xx: ${result.non2xx}, errors: ${result.errors}`);
console.log(`add+delete pairs/s: ${pairs.toFixed(0)}`);
console.log(`latency (ms): p50 ${result.latency.p50}  p99 ${result.latency.p99}  max ${result.latency.max}`);
if (JSON.stringify(load) !== JSON.stringify(idle)) console.log("counters not back at zero:", load);
