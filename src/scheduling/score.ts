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
 *
 * Slow start: an engine with coldness c (0 = warm, 1 = just back) scores as if it also carried
 * c times the load of the busiest candidate in every dimension, so it takes a growing share.
 */
export function leastLoaded(
  weights: ScoreWeights,
  random: () => number = Math.random,
  coldness: (engine: string) => number = () => 0,
): ChooseEngine & ((loads: readonly EngineLoad[]) => number) {
  const fullScore = dimensions.reduce((sum, key) => sum + weights[key], 0);
  return (loads: readonly EngineLoad[], engines: readonly string[] = []): number => {
    const max = dimensions.map((key) => loads.reduce((m, load) => Math.max(m, load[key]), 0));
    let best = Infinity;
    let ties: number[] = [];
    loads.forEach((load, index) => {
      const engine = engines[index];
      let score = engine === undefined ? 0 : coldness(engine) * fullScore;
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
