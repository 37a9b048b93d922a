import { loadDimensions as dimensions, type LoadWeights } from "../../load/store.js";
import type { Scorer } from "../plan.js";

/**
 * Live load: each of the four numbers normalised by its largest value among the candidates (so
 * tokens and request counts weigh comparably), weighted by `weights` and scaled to a cost in
 * [0, 1]. The store computes it from the counters it holds, at the moment of the pick.
 */
export const loadScorer = (weights: LoadWeights): Scorer => {
  const total = dimensions.reduce((sum, key) => sum + weights[key], 0);
  return {
    apply(plan, _request, weight) {
      if (total === 0) return;
      for (const key of dimensions) plan.loadWeights[key] += (weight * weights[key]) / total;
    },
  };
};
