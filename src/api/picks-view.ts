import type { LoadWeights } from "../load/store.js";
import type { FilterName } from "../config/schema.js";
import type { ScorerName } from "../scheduling/chain.js";
import { MAX_EXPLAINED_CANDIDATES, type ExplainedOutcome, type ExplainedPick } from "../scheduling/explanation.js";
import { MAX_DEBUG_PICKS } from "../config/schema.js";
import type { PickHistory } from "../scheduling/pick-history.js";
import type { ApiError } from "./envelope.js";
import { invalidInput } from "./validation.js";

/** One explained pick in the API's spelling (null for what it lacks); scorer, filter and weight names stay as config spells them. */
export interface PickView {
  at: number;
  id: string;
  request_id: string | null;
  model: string | null;
  pool: string;
  engines: number;
  removed_by_filter: Partial<Record<FilterName, number>>;
  candidates: number;
  weighed: number[];
  scored: Array<{ engine: string; scores: Partial<Record<ScorerName, number>>; bias: number }>;
  load_weights: LoadWeights;
  unit_weights: LoadWeights;
  max_requests: number;
  max_prefill_requests: number;
  outcome: ExplainedOutcome;
  engine: string | null;
  fallbacks: string[];
}

export interface PicksView {
  /** `scheduling.debugPicks`: how many picks are kept (0: none). */
  capacity: number;
  /** `scored` holds at most this many of a pick's candidates. */
  max_candidates_per_pick: number;
  /** Newest first. */
  picks: PickView[];
}

/** `?limit=N`: a whole number from 1 to the most picks ever kept; absent, every pick kept. */
export function readLimit(text: string | null): { ok: true; limit: number | undefined } | { ok: false; error: ApiError } {
  if (text === null) return { ok: true, limit: undefined };
  const limit = /^\d{1,7}$/.test(text) ? Number(text) : NaN;
  if (limit >= 1 && limit <= MAX_DEBUG_PICKS) return { ok: true, limit };
  return { ok: false, error: invalidInput(`query parameter 'limit' must be a whole number from 1 to ${MAX_DEBUG_PICKS}, not ${JSON.stringify(text.slice(0, 50))}`) };
}

const pickView = (pick: ExplainedPick): PickView => ({
  at: pick.at,
  id: pick.id,
  request_id: pick.requestId ?? null,
  model: pick.model ?? null,
  pool: pick.pool,
  engines: pick.engines,
  removed_by_filter: pick.removed,
  candidates: pick.candidates,
  weighed: pick.weighed,
  scored: pick.scored,
  load_weights: pick.loadWeights,
  unit_weights: pick.unitWeights,
  max_requests: pick.maxRequests,
  max_prefill_requests: pick.maxPrefillRequests,
  outcome: pick.outcome,
  engine: pick.engine ?? null,
  fallbacks: pick.fallbacks,
});

/** `GET /debug/picks`: the last picks, each with its candidates' scores and the store's choice. */
export function picksView(history: PickHistory, limit: number | undefined): PicksView {
  return { capacity: history.size, max_candidates_per_pick: MAX_EXPLAINED_CANDIDATES, picks: history.recent(limit).map(pickView) };
}
