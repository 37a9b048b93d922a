// `npm run try`: engine simulators, the sidecar and a stand-in for Envoy, left running, with the
// commands to send a request through them and to watch the load move. Ctrl-C stops it all.
import { ListenError } from "../../src/listen-error.js";
import { MODEL, POOL, startDemoCluster } from "./cluster.js";

const ENVOY_PORT = Number(process.env["TRY_PORT"] ?? 8080);
const HTTP_PORT = Number(process.env["TRY_HTTP_PORT"] ?? 9090);

async function main(): Promise<void> {
  let cluster;
  try {
    cluster = await startDemoCluster({ engines: 3, httpPort: HTTP_PORT, envoyPort: ENVOY_PORT, logLevel: "warn" });
  } catch (error) {
    if (!(error instanceof ListenError)) throw error;
    console.error(`${error.message} (choose others with TRY_PORT=… TRY_HTTP_PORT=…)`);
    process.exit(1);
  }
  const { engines, envoy, sidecar } = cluster;
  const http = `http://127.0.0.1:${sidecar.ports.http}`;
  const body = JSON.stringify({ model: MODEL, stream: true, max_tokens: 500, messages: [{ role: "user", content: "Tell me about load balancing." }] });
  console.log(`metadata-center is picking for ${engines.length} simulated engines (Llama-3.1-8B on an H100: ${engines.map((engine) => engine.address).join(", ")})
behind a stand-in for Envoy at ${envoy.url}.

Send a chat completion through it (streamed, 500 tokens):
  curl -N ${envoy.url}/v1/chat/completions -H 'content-type: application/json' \\
    -d '${body}'

While it streams, the load it holds:
  curl -s '${http}/v1/load/stats?cluster=${POOL}'
or live in a browser: ${http}/dashboard     (the engine that served it: the x-sim-engine response header)

Ctrl-C stops everything.`);
  const stop = (): void => {
    void cluster.close().then(() => process.exit(0));
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
