import type { FilterName } from "../config/schema.js";
import type { LoadWeights } from "../load/store.js";
import { healthFilter } from "./filters/health.js";
import { saturationFilter } from "./filters/saturation.js";
import { subsetFilter } from "./filters/subset.js";
import type { EngineAvailability, Filter, Scorer } from "./plan.js";
import type { EngineSteps } from "./engine-steps.js";
import type { PrefixIndex } from "./prefix-index.js";
import { loadScorer } from "./scorers/load.js";
import { prefixScorer } from "./scorers/prefix.js";
import { slowStartScorer } from "./scorers/slow-start.js";
import { stepPhaseScorer } from "./scorers/step-phase.js";
import { ttftScorer } from "./scorers/ttft.js";
import type { TtftPredictor } from "./ttft-predictor.js";


/** The scorers config may weigh (`scheduling.scorers`). */
export type ScorerName = "load" | "slowStart" | "prefix" | "ttft" | "stepPhase";

/** The `scheduling` settings the chain is built from. */
export interface ChainSettings {
  filters: readonly FilterName[];
  scorers: Readonly<Record<ScorerName, number>>;
  /** The load scorer's weights on the four load numbers. */
  weights: LoadWeights;
  /** Open requests per engine before it stops taking more; 0 = no limit. */
  maxRequestsPerEngine: number;
  /** Requests in prefill per engine before it stops taking more; 0 = no limit. */
  maxPrefillRequestsPerEngine: number;
}

/** Each part with the name config gives it, which an explained pick reports it by. */
export interface Chain {
  filters: ReadonlyArray<{ name: FilterName; filter: Filter }>;
  scorers: ReadonlyArray<{ name: ScorerName; scorer: Scorer; weight: number }>;
}

/** What the chain's parts read that outlives one config: engine health, the prefix index, the TTFT models, the engines' step rhythm. */
export interface ChainState {
  availability: EngineAvailability;
  prefixes: PrefixIndex;
  ttft: TtftPredictor;
  steps: EngineSteps;
}

/** The chain the settings name, in their order; scorers weighted 0 are left out. */
export function buildChain(settings: ChainSettings, { availability, prefixes, ttft, steps }: ChainState): Chain {
  const filters: Record<FilterName, () => Filter> = {
    subset: () => subsetFilter,
    health: () => healthFilter(availability),
    saturation: () => saturationFilter({ requests: settings.maxRequestsPerEngine, prefillRequests: settings.maxPrefillRequestsPerEngine }),
  };
  const scorers: Record<ScorerName, () => Scorer> = {
    load: () => loadScorer(settings.weights),
    slowStart: () => slowStartScorer(availability),
    prefix: () => prefixScorer(prefixes),
    ttft: () => ttftScorer(ttft),
    stepPhase: () => stepPhaseScorer(steps, ttft),
  };
  return {
    filters: settings.filters.map((name) => ({ name, filter: filters[name]() })),
    scorers: (Object.keys(scorers) as ScorerName[])
      .filter((name) => settings.scorers[name] > 0)
      .map((name) => ({ name, scorer: scorers[name](), weight: settings.scorers[name] })),
  };
}
