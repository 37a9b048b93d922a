// The sidecar's pick path — parse, price, the scheduling chain, the memory store — run in this
// process on each request of a list, one at a time with nothing else running: what the code
// costs, apart from what a busy machine adds to it.
import type { Config } from "../../src/config/schema.js";
import { InferenceExchange } from "../../src/inference/lifecycle.js";
import { RequestParser } from "../../src/inference/request-parser.js";
import { TokenizerRegistry } from "../../src/inference/tokenizers/registry.js";
import { MemoryLoadStore } from "../../src/load/memory-store.js";
import { PoolDirectory } from "../../src/pools/pools.js";
import { Picker } from "../../src/scheduling/picker.js";
import { lifecycleContext } from "../support/lifecycle-context.js";

/** Requests picked before timing starts (the compiler's and the tokenizer's warm-up). */
const WARM_UP = 100;
/** Exchanges left open while the next ones pick, as under traffic: the oldest is released. */
const OPEN = 100;

/** Each pick's time, ms: from the decision's start to its answer, as the sidecar's histogram measures it. */
export async function picksAlone(config: Config, bodies: readonly Buffer[]): Promise<number[]> {
  const directory = new PoolDirectory(config.pools);
  const tokens = new TokenizerRegistry(config.tokenizer, () => directory, (error) => {
    throw error;
  });
  await tokens.configure(config.pools);
  const parser = new RequestParser({
    offThreadAboveBytes: 512 * 1024,
    wholeUpToCost: () => config.tokenizer.countWholeUpTo,
    includeUsage: config.inference.forceIncludeUsage,
    lost: (error) => {
      throw error;
    },
  });
  const store = new MemoryLoadStore();
  const context = lifecycleContext({
    store,
    picker: new Picker(store, () => directory, config.scheduling),
    parser,
    tokens,
    maxJsonResponseBytes: config.load.maxJsonResponseBytes,
    forceIncludeUsage: config.inference.forceIncludeUsage,
  });
  const times: number[] = [];
  const open: InferenceExchange[] = [];
  try {
    for (const [index, body] of [...bodies.slice(0, WARM_UP), ...bodies].entries()) {
      const exchange = new InferenceExchange(context, `alone-${index}`);
      const started = performance.now();
      const decision = await exchange.decide({ path: "/v1/chat/completions", header: () => undefined, modelOverride: undefined, body, bodySeen: true, chosenEngine: undefined, subset: undefined });
      if (index >= WARM_UP) times.push(performance.now() - started);
      if (decision.kind !== "route") throw new Error(`request ${index} was not routed: ${decision.kind}`);
      open.push(exchange);
      // What the sidecar does after a reply (the full count of a long prompt) runs before the next pick, as between two messages.
      await new Promise((resolve) => setImmediate(resolve));
      if (open.length > OPEN) open.shift()!.abort("client_reset");
    }
  } finally {
    for (const exchange of open) exchange.abort("client_reset");
    await Promise.all([tokens.close(), parser.close()]);
  }
  return times;
}
