import type { PrefixIndex } from "../prefix-index.js";
import type { Scorer } from "../plan.js";

/**
 * Prefix affinity: a candidate costs the share of the prompt's blocks it is not believed to hold
 * (0 when it holds them all), so a request goes where its prefix is cached unless the load
 * scorer says that engine is too busy for it.
 */
export const prefixScorer = (index: PrefixIndex): Scorer => ({
  apply(plan, request, weight) {
    const blocks = request.prefix ?? [];
    if (blocks.length === 0) return;
    plan.candidates.forEach((engine, i) => {
      plan.bias[i] = (plan.bias[i] ?? 0) + weight * (1 - index.matched(engine, blocks) / blocks.length);
    });
  },
});
