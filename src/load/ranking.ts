import { loadDimensions as dimensions, type EngineLoad, type LoadWeights } from "./store.js";

/** Scores within this distance count as equal, so float noise does not break ties unfairly. */
const TIE = 1e-9;

/**
 * The choice every store makes in its atomic step, and the Redis store's script repeats: each live
 * load number normalised by its largest value among the candidates still in the running, weighted
 * and summed with the candidate's bias (what the request-dependent scorers made of it) and each
 * number times its unit weight; the lowest score wins; among equal scores `tieBreak` ∈ [0, 1)
 * chooses, so equal engines share a burst. Returns up to `count` indices into `loads`, best first,
 * each chosen among those left.
 */
export function rankByLoad(
  loads: readonly EngineLoad[],
  bias: readonly number[],
  weights: LoadWeights,
  unitWeights: LoadWeights | undefined,
  tieBreak: number,
  count: number,
): number[] {
  const left = loads.map((_, index) => index);
  const ranked: number[] = [];
  while (ranked.length < count && left.length > 0) {
    const max = dimensions.map((key) => left.reduce((m, index) => Math.max(m, loads[index]?.[key] ?? 0), 0));
    let best = Infinity;
    let ties: number[] = [];
    for (const [position, index] of left.entries()) {
      const load = loads[index];
      let score = bias[index] ?? 0;
      dimensions.forEach((key, d) => {
        const top = max[d] ?? 0;
        if (top > 0 && load !== undefined) score += (weights[key] * load[key]) / top;
      });
      if (unitWeights !== undefined && load !== undefined) for (const key of dimensions) score += unitWeights[key] * load[key];
      if (score < best - TIE) {
        best = score;
        ties = [position];
      } else if (score <= best + TIE) ties.push(position);
    }
    const position = ties[Math.min(ties.length - 1, Math.floor(tieBreak * ties.length))] ?? 0;
    const [chosen] = left.splice(position, 1);
    if (chosen === undefined) break;
    ranked.push(chosen);
  }
  return ranked;
}
