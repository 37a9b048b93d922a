import { loadDimensions } from "../../load/store.js";
import type { Scorer } from "../plan.js";
import type { TtftPredictor } from "../ttft-predictor.js";

/**
 * The request's own prefill counts twice: as part of its TTFT, and as the wait it adds for every
 * request queued behind it on that engine, which a cached prefix spares them too (counted once, a
 * pick follows the cache less than the shared-prefix workloads reward).
 */
const OWN_PREFILL_FACTOR = 2;

/**
 * Predicted time to first token, in seconds: each candidate costs what its pool's model says the
 * request's own uncached prompt takes there (twice, see above), plus, through the store's unit
 * weights, what each unit of its live load adds at the moment of the pick. Saved prefill and
 * queueing are weighed in one unit, so a hot prefix is followed only while its engine's queue costs
 * less than the prefill it saves.
 */
export const ttftScorer = (predictor: TtftPredictor): Scorer => ({
  apply(plan, request, weight) {
    const { perUncachedToken, perUnit } = predictor.model(plan.pool).costs();
    const scale = weight / 1000;
    const perToken = scale * perUncachedToken * OWN_PREFILL_FACTOR;
    plan.candidates.forEach((engine, i) => {
      plan.bias[i] = (plan.bias[i] ?? 0) + perToken * predictor.uncachedTokens(engine, request);
    });
    for (const key of loadDimensions) plan.unitWeights[key] += scale * perUnit[key];
  },
});
