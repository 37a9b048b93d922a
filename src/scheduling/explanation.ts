import { loadDimensions, zeroLoad, type LoadWeights } from "../load/store.js";
import type { FilterName } from "../config/schema.js";
import type { ScorerName } from "./chain.js";
import type { PickPlan, Scorer, SchedulingRequest } from "./plan.js";

/** Candidates kept per explained pick, so that a 1,000-engine pool does not make each record 1,000 entries long. */
export const MAX_EXPLAINED_CANDIDATES = 32;

/** Ids, model and pool names can come from clients (a catch-all pool takes any model, the API any cluster): longer ones are cut. */
const MAX_TEXT_LENGTH = 256;

export type ExplainedOutcome = "picked" | "saturated" | "no_engine" | "outside_subset" | "duplicate";

/** What the sidecar's scorers made of one candidate. */
export interface CandidateScores {
  engine: string;
  /** Each scorer's weighted cost here, by its config name; a scorer on live load is the store's part (see `loadWeights`). */
  scores: Partial<Record<ScorerName, number>>;
  /** Their sum: the bias the store adds to this candidate's load score. */
  bias: number;
}

/**
 * One pick as the sidecar saw it. The store chose atomically among the candidates by their live
 * load (each number normalised by its largest among them, weighted by `loadWeights`, and each times
 * its `unitWeights`) plus their bias; those load numbers are the store's and are not read again to
 * explain the pick.
 */
export interface ExplainedPick {
  /** ms since the epoch. */
  at: number;
  /** The ledger id. */
  id: string;
  requestId: string | undefined;
  model: string | undefined;
  pool: string;
  /** Engines the pick began with: the pool's, or the caller's candidates. */
  engines: number;
  /** Engines each filter took out, in the chain's order (the store drops those at `maxRequests` itself). */
  removed: Partial<Record<FilterName, number>>;
  /** Engines that reached the scorers. */
  candidates: number;
  /**
   * How many the store weighed in each round: all of them, or a sample of `scheduling.maxCandidates`
   * in a larger pool, then the next sample of those left out while the last one was full.
   */
  weighed: number[];
  /** At most MAX_EXPLAINED_CANDIDATES of the last round's, in its order, the chosen engine and fallbacks always among them. */
  scored: CandidateScores[];
  loadWeights: LoadWeights;
  /** Each live number's unit cost, added as is (the TTFT scorer's, in seconds). */
  unitWeights: LoadWeights;
  maxRequests: number;
  maxPrefillRequests: number;
  outcome: ExplainedOutcome;
  /** The engine the store reserved. */
  engine: string | undefined;
  fallbacks: string[];
}

/** Cut to a copy: a slice alone would keep the whole text alive as long as the record. */
const cut = (text: string): string => (text.length > MAX_TEXT_LENGTH ? `${Buffer.from(text.slice(0, MAX_TEXT_LENGTH)).toString()}…` : text);

/**
 * Applies a scorer to a copy of the plan with a zero bias and zero load and unit weights, then adds
 * them to the plan, and returns its own costs per candidate (undefined for a scorer that only weighs
 * live load). The plan ends exactly as applying it in place would leave it: the same sums in the same order.
 */
export function applyAlone(plan: PickPlan, scorer: Scorer, request: SchedulingRequest, weight: number): number[] | undefined {
  const alone: PickPlan = { ...plan, bias: plan.candidates.map(() => 0), loadWeights: zeroLoad(), unitWeights: zeroLoad() };
  scorer.apply(alone, request, weight);
  alone.bias.forEach((cost, i) => (plan.bias[i] = (plan.bias[i] ?? 0) + cost));
  const weighsLoad = loadDimensions.some((key) => alone.loadWeights[key] !== 0 || alone.unitWeights[key] !== 0);
  for (const key of loadDimensions) {
    plan.loadWeights[key] += alone.loadWeights[key];
    plan.unitWeights[key] += alone.unitWeights[key];
  }
  return weighsLoad && alone.bias.every((cost) => cost === 0) ? undefined : alone.bias;
}

/** Collects one pick's explanation as the picker goes: built only when a pick history wants it. */
export class PickExplanation {
  private readonly at = Date.now();
  private readonly removed: Partial<Record<FilterName, number>> = {};
  private readonly costs: Array<{ name: ScorerName; costs: readonly number[] }> = [];
  /** The candidates as scored, the order `costs` follows; a sample reorders the plan's. */
  private all: readonly string[] | undefined;
  private readonly rounds: number[] = [];

  constructor(
    private readonly request: SchedulingRequest,
    private readonly pool: string,
    private readonly engines: number,
  ) {}

  /** A held request trying again: the queue retries a saturated pool every few ms. */
  get retry(): boolean {
    return this.request.retry === true;
  }

  filtered(name: FilterName, before: number, after: number): void {
    this.removed[name] = before - after;
  }

  scored(name: ScorerName, costs: readonly number[] | undefined): void {
    if (costs !== undefined) this.costs.push({ name, costs });
  }

  /** Every scorer has run: the candidates as they stand, before any sampling. */
  allScored(plan: PickPlan): void {
    this.all = plan.candidates;
  }

  /** The store is asked to pick among this many. */
  weighed(count: number): void {
    this.rounds.push(count);
  }

  done(plan: PickPlan, outcome: ExplainedOutcome, chosen?: { engine: string; fallbacks: readonly string[] }): ExplainedPick {
    const fallbacks = chosen?.fallbacks.slice(0, MAX_EXPLAINED_CANDIDATES - 1) ?? [];
    return {
      at: this.at,
      id: cut(this.request.id),
      requestId: this.request.requestId && cut(this.request.requestId),
      model: this.request.model && cut(this.request.model),
      pool: cut(this.pool),
      engines: this.engines,
      removed: this.removed,
      candidates: this.all?.length ?? plan.candidates.length,
      weighed: this.rounds,
      // Before the scorers ran (a filter refused) there is nothing to show per candidate.
      scored: this.all === undefined ? [] : this.scoredCandidates(plan, this.all, chosen === undefined ? [] : [chosen.engine, ...fallbacks]),
      loadWeights: { ...plan.loadWeights },
      unitWeights: { ...plan.unitWeights },
      maxRequests: plan.maxRequests,
      maxPrefillRequests: plan.maxPrefillRequests,
      outcome,
      engine: chosen?.engine,
      fallbacks,
    };
  }

  /** The candidates kept: the chosen and fallbacks, and as many others as fit, in the plan's order. */
  private scoredCandidates(plan: PickPlan, all: readonly string[], kept: readonly string[]): CandidateScores[] {
    // Sampled, the plan holds other arrays in another order: each engine's costs are found by name.
    const scoredAt = plan.candidates === all ? undefined : new Map(all.map((engine, i) => [engine, i]));
    const always = new Set(kept);
    let room = MAX_EXPLAINED_CANDIDATES - always.size;
    const scored: CandidateScores[] = [];
    plan.candidates.forEach((engine, i) => {
      if (!always.has(engine)) {
        if (room === 0) return;
        room -= 1;
      }
      const at = scoredAt === undefined ? i : (scoredAt.get(engine) ?? -1);
      const scores: Partial<Record<ScorerName, number>> = {};
      for (const { name, costs } of this.costs) scores[name] = costs[at] ?? 0;
      scored.push({ engine, scores, bias: plan.bias[i] ?? 0 });
    });
    return scored;
  }
}
