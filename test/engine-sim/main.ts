// Runs engine simulators standalone, e.g. to try the sidecar end to end:
//   npx tsx test/engine-sim/main.ts --port 8000 --count 4 --model meta-llama/Llama-3.1-8B-Instruct
// Prints one address per line, then serves until SIGINT / SIGTERM.
import { parseArgs } from "node:util";
import { LLAMA_8B_H100, slowedDown, startEngineSim, type EngineSim, type EngineSimOptions } from "./engine.js";

const H100 = LLAMA_8B_H100;
const USAGE = `usage: tsx test/engine-sim/main.ts [options]
  --port N             first port (default 8000; 0 = pick free ports); engine i listens on port+i
  --count N            number of engines (default 1)
  --model NAME         model served (repeatable; default: accept any model)
  --max-tokens N       tokens generated when the request sets no max_tokens (default 16)
The engine model (vLLM V1 scheduler; defaults: Llama-3.1-8B on one H100):
  --step-ms N          fixed cost of a step, ms (default ${H100.stepBaseMs})
  --prefill-ms N       cost per prefilled token, ms (default ${H100.prefillMsPerToken})
  --decode-ms N        cost per sequence decoded in a step, ms (default ${H100.decodeMsPerSequence})
  --token-budget N     tokens per step, max_num_batched_tokens (default ${H100.tokenBudget})
  --max-running N      running requests, max_num_seqs; the rest wait (default ${H100.maxRunning})
  --kv-blocks N        KV-cache blocks of ${H100.blockSize} tokens (default ${H100.kvBlocks})
  --slowdown F         every step cost F times higher (default 1)`;

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
      "max-tokens": { type: "string" },
      "step-ms": { type: "string" },
      "prefill-ms": { type: "string" },
      "decode-ms": { type: "string" },
      "token-budget": { type: "string" },
      "max-running": { type: "string" },
      "kv-blocks": { type: "string" },
      slowdown: { type: "string" },
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
  const model = slowedDown(
    {
      ...H100,
      stepBaseMs: numberFlag(values, "step-ms", H100.stepBaseMs),
      prefillMsPerToken: numberFlag(values, "prefill-ms", H100.prefillMsPerToken),
      decodeMsPerSequence: numberFlag(values, "decode-ms", H100.decodeMsPerSequence),
      tokenBudget: numberFlag(values, "token-budget", H100.tokenBudget),
      maxRunning: numberFlag(values, "max-running", H100.maxRunning),
      kvBlocks: numberFlag(values, "kv-blocks", H100.kvBlocks),
    },
    numberFlag(values, "slowdown", 1),
  );
  const options: EngineSimOptions = { models: values.model, model, defaultMaxTokens: numberFlag(values, "max-tokens", 16) };

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
