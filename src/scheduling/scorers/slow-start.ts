import type { EngineAvailability, Scorer } from "../plan.js";

/**
 * Slow start: an engine back from ejection, or new, costs its coldness (1 just back, 0 warm) on
 * top, as if it also carried the busiest candidate's load, so it takes a growing share.
 */
export const slowStartScorer = (availability: EngineAvailability): Scorer => ({
  apply(plan, _request, weight) {
    plan.candidates.forEach((engine, index) => {
      plan.bias[index] = (plan.bias[index] ?? 0) + weight * availability.coldness(engine);
    });
  },
});
