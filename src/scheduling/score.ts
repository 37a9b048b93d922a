import type { ChooseEngine, EngineLoad } from "../load/store.js";

/** How much each load number weighs in the default policy (lower total score wins). */
export interface ScoreWeights {
  requests: number;
  prefillRequests: number;
  prefillTokens: number;
  tokensHeld: number;
}

export const defaultWeights: ScoreWeights = { requests: 1, prefillRequests: 1, prefillTokens: 1, tokensHeld: 0.5 };

const dimensions = ["requests", "prefillRequests", "prefillTokens", "tokensHeld"] as const;

/** Scores within this distance count as equal, so float noise does not break ties unfairly. */
const TIE = 1e-9;

/**
 * The default policy: each load number is normalised by its largest value across the
 * candidates (so tokens and request counts weigh comparably), weighted and summed; the
 * lowest score wins, chosen at random among equals so idle engines share a burst evenly.
 */
export function leastLoaded(weights: ScoreWeights, random: () => number = Math.random): ChooseEngine & ((loads: readonly EngineLoad[]) => number) {
  return (loads: readonly EngineLoad[]): number => {
    const max = dimensions.map((key) => loads.reduce((m, load) => Math.max(m, load[key]), 0));
    let best = Infinity;
    let ties: number[] = [];
    loads.forEach((load, index) => {
      let score = 0;
      dimensions.forEach((key, d) => {
        const top = max[d] ?? 0;
        if (top > 0) score += (weights[key] * load[key]) / top;
      });
      if (score < best - TIE) {
        best = score;
        ties = [index];
      } else if (score <= best + TIE) ties.push(index);
    });
    return ties[Math.floor(random() * ties.length)] ?? 0;
  };
}
