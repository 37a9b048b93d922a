import type { EngineSteps } from "../engine-steps.js";
import type { Scorer } from "../plan.js";
import type { TtftPredictor } from "../ttft-predictor.js";

/**
 * Step phase: a request sent to an engine waits for the step under way there to end before its
 * prefill starts. A candidate costs that wait, from the rhythm its streams show, as a share of the
 * wait plus the request's own prefill there (the pool's TTFT model prices it): up to the whole
 * weight for a short prompt, next to nothing for a long one, whose prefill dwarfs a step.
 */
export const stepPhaseScorer = (steps: EngineSteps, predictor: TtftPredictor): Scorer => ({
  apply(plan, request, weight) {
    const rhythms = plan.candidates.map((engine) => steps.rhythm(engine));
    if (rhythms.every((rhythm) => rhythm === undefined)) return;
    // One scale for every candidate: the least prefill the request can get, so a cached prefix costs no phase of its own.
    const { perUncachedToken } = predictor.model(plan.pool).costs();
    let least = Infinity;
    for (const engine of plan.candidates) least = Math.min(least, predictor.uncachedTokens(engine, request));
    const prefillMs = perUncachedToken * least;
    rhythms.forEach((rhythm, i) => {
      if (rhythm !== undefined) plan.bias[i] = (plan.bias[i] ?? 0) + (weight * rhythm.waitMs) / (rhythm.intervalMs + prefillMs);
    });
  },
});
