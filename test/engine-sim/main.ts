// Runs engine simulators standalone, e.g. to try the sidecar end to end:
//   npx tsx test/engine-sim/main.ts --port 8000 --count 4 --model meta-llama/Llama-3.1-8B-Instruct
// Prints one address per line, then serves until SIGINT / SIGTERM.
import { parseArgs } from "node:util";
import { REALISTIC_TIMING, startEngineSim, type EngineSim, type EngineSimOptions } from "./engine.js";

const USAGE = `usage: tsx test/engine-sim/main.ts [options]
  --port N             first port (default 8000; 0 = pick free ports); engine i listens on port+i
  --count N            number of engines (default 1)
  --model NAME         model served (repeatable; default: accept any model)
  --prefill-tps N      prefill tokens/s (default ${REALISTIC_TIMING.prefillTokensPerSecond})
  --decode-tps N       decode tokens/s per request (default ${REALISTIC_TIMING.decodeTokensPerSecond})
  --overhead-ms N      fixed cost per request (default ${REALISTIC_TIMING.overheadMs})
  --max-concurrent N   running requests, the rest queue (default ${REALISTIC_TIMING.maxConcurrent})
  --slowdown F         decode slowdown per other running request (default ${REALISTIC_TIMING.decodeSlowdownPerRequest})
  --max-tokens N       tokens generated when the request sets no max_tokens (default 16)`;

function numberFlag(values: Record<string, unknown>, name: string, fallback: number): number {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (typeof raw !== "string" || raw.trim() === "" || Number.isNaN(value)) {
    throw new RangeError(`--${name}: not a number: ${String(raw)}`);
  }
  return value;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: "string" },
      count: { type: "string" },
      model: { type: "string", multiple: true },
      "prefill-tps": { type: "string" },
      "decode-tps": { type: "string" },
      "overhead-ms": { type: "string" },
      "max-concurrent": { type: "string" },
      slowdown: { type: "string" },
      "max-tokens": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help === true) {
    console.log(USAGE);
    return;
  }
  const firstPort = numberFlag(values, "port", 8000);
  const count = numberFlag(values, "count", 1);
  if (!Number.isInteger(count) || count < 1) throw new RangeError(`--count: must be an integer >= 1, got ${count}`);
  const options: EngineSimOptions = {
    models: values.model,
    prefillTokensPerSecond: numberFlag(values, "prefill-tps", REALISTIC_TIMING.prefillTokensPerSecond),
    decodeTokensPerSecond: numberFlag(values, "decode-tps", REALISTIC_TIMING.decodeTokensPerSecond),
    overheadMs: numberFlag(values, "overhead-ms", REALISTIC_TIMING.overheadMs),
    maxConcurrent: numberFlag(values, "max-concurrent", REALISTIC_TIMING.maxConcurrent),
    decodeSlowdownPerRequest: numberFlag(values, "slowdown", REALISTIC_TIMING.decodeSlowdownPerRequest),
    defaultMaxTokens: numberFlag(values, "max-tokens", 16),
  };

  const engines: EngineSim[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(engines.map((engine) => engine.close()));
  };
  process.once("SIGINT", () => void stop());
  process.once("SIGTERM", () => void stop());
  try {
    for (let i = 0; i < count; i++) {
      engines.push(await startEngineSim({ ...options, port: firstPort === 0 ? 0 : firstPort + i }));
    }
  } catch (error) {
    await stop();
    throw error;
  }
  for (const engine of engines) console.log(engine.address);
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exitCode = 1;
});
