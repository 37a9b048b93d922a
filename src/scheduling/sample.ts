import type { PickPlan } from "./plan.js";

/**
 * The candidates a pick weighs when the pool has more than `size` of them: the half the
 * request-dependent scorers like best (equal costs in random order), then others drawn at random.
 * The store's atomic pick reads and ranks every candidate's live load, so its cost grows with
 * their number; among this many, the least loaded is as good as the pool's least loaded but for
 * rare runs of bad luck (the power of d choices, with d = size). Returns the candidates left out,
 * in no particular order, for a second try when all of the sample are full.
 */
export function sampleCandidates(plan: PickPlan, size: number, random: () => number): { candidates: string[]; bias: number[] } {
  const count = plan.candidates.length;
  const order = Array.from({ length: count }, (_, index) => index);
  shuffle(order, random);
  const costs = plan.bias;
  const ranked = costs.some((cost) => cost !== costs[0]);
  // Stable on the shuffled order: engines of equal cost stay in random order.
  const favoured = ranked ? [...order].sort((a, b) => (costs[a] ?? 0) - (costs[b] ?? 0)).slice(0, Math.ceil(size / 2)) : [];
  const taken = new Set(favoured);
  const chosen = [...favoured];
  for (const index of order) {
    if (chosen.length >= size) break;
    if (!taken.has(index)) {
      chosen.push(index);
      taken.add(index);
    }
  }
  const left = order.filter((index) => !taken.has(index));
  const candidates = plan.candidates;
  plan.candidates = chosen.map((index) => candidates[index] ?? "");
  plan.bias = chosen.map((index) => costs[index] ?? 0);
  return { candidates: left.map((index) => candidates[index] ?? ""), bias: left.map((index) => costs[index] ?? 0) };
}

/** Fisher–Yates, in place. */
function shuffle(values: number[], random: () => number): void {
  for (let i = values.length - 1; i > 0; i -= 1) {
    const j = Math.floor(random() * (i + 1));
    const value = values[i] ?? 0;
    values[i] = values[j] ?? 0;
    values[j] = value;
  }
}
