import { andThen, zeroLoad, type Awaitable, type LoadStore, type PickOutcome, type Reservation } from "../load/store.js";
import type { PoolDirectory } from "../pools/pools.js";
import { buildChain, type Chain, type ChainSettings } from "./chain.js";
import { applyAlone, PickExplanation, type ExplainedOutcome } from "./explanation.js";
import type { PickHistory } from "./pick-history.js";
import type { EngineAvailability, PickPlan, SchedulingRequest } from "./plan.js";
import { EngineSteps } from "./engine-steps.js";
import { PrefixIndex } from "./prefix-index.js";
import { sampleCandidates } from "./sample.js";
import { TtftPredictor, type Forecast } from "./ttft-predictor.js";

export type { EngineAvailability, SchedulingRequest as PickRequest } from "./plan.js";
export type { Forecast } from "./ttft-predictor.js";

export type PickResult =
  /** `forecast`: the TTFT predicted there; tell it when the first token comes, and the pool's model learns. */
  | { kind: "picked"; reservation: Reservation; fallbacks: string[]; forecast: Forecast }
  | { kind: "no_pool"; model: string | undefined }
  | { kind: "no_engine"; pool: string }
  /** The subset hint left no engine of the pool to pick from. */
  | { kind: "outside_subset"; pool: string }
  /** Every candidate at `limit` open requests or `prefillLimit` in prefill (0: that bound is off). */
  | { kind: "saturated"; pool: string; limit: number; prefillLimit: number }
  /** The request's id is already open. */
  | { kind: "duplicate"; pool: string };

/** The bound a saturated pool's engines are at, in words: "12 requests", "4 requests in prefill", or both. */
export function saturationLimit({ limit, prefillLimit }: { limit: number; prefillLimit: number }): string {
  const bounds = [limit > 0 ? `${limit} requests` : "", prefillLimit > 0 ? `${prefillLimit} requests in prefill` : ""].filter((bound) => bound !== "");
  return bounds.join(" or ");
}

export interface PickerSettings extends ChainSettings {
  /** Next-best engines named after the chosen one. */
  fallbacks: number;
  /** Most candidates one pick weighs (a larger pool is sampled); 0 = all. */
  maxCandidates: number;
}

const alwaysAvailable: EngineAvailability = { eligible: () => true, coldness: () => 0 };

/** What a picker reads beyond its settings; each part defaults to a fresh one. */
export interface PickerParts {
  /** Engine health (every engine warm and eligible when absent). */
  availability?: EngineAvailability | undefined;
  /** The prefix index, kept by the caller across config reloads. */
  prefixes?: PrefixIndex | undefined;
  /** The pools' TTFT models, kept by the caller across config reloads (they read `prefixes`). */
  ttft?: TtftPredictor | undefined;
  /** The engines' step rhythm, fed from their streams by the caller (none known when absent). */
  steps?: EngineSteps | undefined;
  /** Draws the tie-break in [0, 1). */
  random?: (() => number) | undefined;
  /** Where explained picks go (kept by the caller across config reloads); without it none is built. */
  history?: PickHistory | undefined;
}

/** The model's pool, then the chain's filters and scorers; the store picks and reserves in one step. */
export class Picker {
  private readonly chain: Chain;
  private readonly prefixes: PrefixIndex;
  private readonly ttft: TtftPredictor;
  private readonly random: () => number;
  private readonly history: PickHistory | undefined;
  /** True when a scorer reads the prompt's blocks: the caller hashes them only then. */
  readonly usesPrefix: boolean;

  constructor(
    private readonly store: LoadStore,
    private readonly directory: () => PoolDirectory,
    private readonly settings: PickerSettings,
    parts: PickerParts = {},
  ) {
    this.prefixes = parts.prefixes ?? new PrefixIndex();
    this.ttft = parts.ttft ?? new TtftPredictor(this.prefixes);
    this.chain = buildChain(settings, { availability: parts.availability ?? alwaysAvailable, prefixes: this.prefixes, ttft: this.ttft, steps: parts.steps ?? new EngineSteps() });
    this.random = parts.random ?? Math.random;
    this.history = parts.history;
    this.usesPrefix = settings.scorers.prefix > 0 || settings.scorers.ttft > 0;
  }

  /** The pool a model's requests go to, undefined when none serves it. */
  poolFor(model: string | undefined): string | undefined {
    return this.directory().forModel(model)?.name;
  }

  /** Among the engines of the model's pool. Synchronous when the store is. */
  pick(request: SchedulingRequest): Awaitable<PickResult> {
    const pool = this.directory().forModel(request.model);
    if (pool === undefined) return { kind: "no_pool", model: request.model };
    return this.pickAmong(pool.name, pool.endpoints, request);
  }

  /** Among the given engines, counted under `pool` (a scheduler that names its candidates: the HTTP API's picks). */
  pickAmong(pool: string, engines: readonly string[], request: SchedulingRequest): Awaitable<Exclude<PickResult, { kind: "no_pool" }>> {
    const explanation = this.history?.wanted() === true ? new PickExplanation(request, pool, engines.length) : undefined;
    const plan: PickPlan = {
      pool,
      candidates: engines,
      bias: [],
      loadWeights: zeroLoad(),
      unitWeights: zeroLoad(),
      maxRequests: 0,
      maxPrefillRequests: 0,
    };
    for (const { name, filter } of this.chain.filters) {
      const before = plan.candidates.length;
      const refusal = filter.apply(plan, request);
      explanation?.filtered(name, before, plan.candidates.length);
      if (refusal !== undefined) return this.explained(explanation, plan, { kind: refusal.kind, pool });
    }
    plan.bias = plan.candidates.map(() => 0);
    for (const { name, scorer, weight } of this.chain.scorers) {
      if (explanation === undefined) scorer.apply(plan, request, weight);
      else explanation.scored(name, applyAlone(plan, scorer, request, weight));
    }
    explanation?.allScored(plan);
    const max = this.settings.maxCandidates;
    const rest = max > 0 && plan.candidates.length > max ? sampleCandidates(plan, max, this.random) : undefined;
    return this.reserveAmong(plan, rest, request, explanation);
  }

  /**
   * The store's atomic pick among the plan's candidates; a full sample is no reason to refuse
   * while engines left out of it have room. Rounds a synchronous store answers run in a loop, so
   * a large saturated pool sampled in small rounds does not deepen the stack.
   */
  private reserveAmong(
    plan: PickPlan,
    unsampled: ReturnType<typeof sampleCandidates> | undefined,
    request: SchedulingRequest,
    explanation: PickExplanation | undefined,
  ): Awaitable<Exclude<PickResult, { kind: "no_pool" }>> {
    for (;;) {
      const outcome = this.reserve(plan, request, explanation);
      if (outcome instanceof Promise) {
        return outcome.then((answer) =>
          this.nextRound(plan, unsampled, answer) ? this.reserveAmong(plan, this.resample(plan), request, explanation) : this.outcome(plan, request, explanation, answer),
        );
      }
      if (!this.nextRound(plan, unsampled, outcome)) return this.outcome(plan, request, explanation, outcome);
      unsampled = this.resample(plan);
    }
  }

  /** After a saturated round, the engines not yet sampled become the candidates: true when there are any. */
  private nextRound(plan: PickPlan, unsampled: ReturnType<typeof sampleCandidates> | undefined, outcome: PickOutcome): boolean {
    if (outcome.kind !== "saturated" || unsampled === undefined || unsampled.candidates.length === 0) return false;
    plan.candidates = unsampled.candidates;
    plan.bias = unsampled.bias;
    return true;
  }

  /** A sample of the plan's candidates for the next round (the plan keeps it), and the rest; undefined when all fit in one. */
  private resample(plan: PickPlan): ReturnType<typeof sampleCandidates> | undefined {
    return plan.candidates.length > this.settings.maxCandidates ? sampleCandidates(plan, this.settings.maxCandidates, this.random) : undefined;
  }

  private outcome(plan: PickPlan, request: SchedulingRequest, explanation: PickExplanation | undefined, outcome: PickOutcome): Awaitable<Exclude<PickResult, { kind: "no_pool" }>> {
    const pool = plan.pool;
    switch (outcome.kind) {
      case "reserved": {
        const { engine } = outcome.reservation;
        try {
          // Read before the record below: the forecast is of what the engine held when it was picked.
          const forecast = this.ttft.forecast(pool, engine, outcome.load, request);
          if (request.prefix !== undefined) this.prefixes.record(engine, request.prefix);
          return this.explained(explanation, plan, { kind: "picked", reservation: outcome.reservation, fallbacks: outcome.fallbacks, forecast });
        } catch (error) {
          // The caller never learns of a reservation it was not given: released here, or the engine would carry it until its TTL.
          return andThen(this.store.release(request.id, "internal_error"), () => {
            throw error;
          });
        }
      }
      case "saturated":
        return this.explained(explanation, plan, { kind: "saturated", pool, limit: plan.maxRequests, prefillLimit: plan.maxPrefillRequests });
      case "duplicate":
        return this.explained(explanation, plan, { kind: "duplicate", pool });
      case "none":
        return this.explained(explanation, plan, { kind: "no_engine", pool });
    }
  }

  /** One round of the store's atomic pick, among the plan's candidates as they are now. */
  private reserve(plan: PickPlan, request: SchedulingRequest, explanation: PickExplanation | undefined): ReturnType<LoadStore["pickAndReserve"]> {
    explanation?.weighed(plan.candidates.length);
    return this.store.pickAndReserve({
      id: request.id,
      pool: plan.pool,
      candidates: plan.candidates,
      bias: plan.bias,
      loadWeights: plan.loadWeights,
      unitWeights: plan.unitWeights,
      promptTokens: request.promptTokens,
      maxRequests: plan.maxRequests,
      maxPrefillRequests: plan.maxPrefillRequests,
      fallbacks: this.settings.fallbacks,
      tieBreak: this.random(),
      externalId: request.externalId,
    });
  }

  /** Hands the finished explanation, if one was built, to the history; returns the result unchanged. */
  private explained<R extends Exclude<PickResult, { kind: "no_pool" }>>(explanation: PickExplanation | undefined, plan: PickPlan, result: R): R {
    if (explanation === undefined || (result.kind === "saturated" && explanation.retry)) return result;
    const outcome: ExplainedOutcome = result.kind;
    const chosen = result.kind === "picked" ? { engine: result.reservation.engine, fallbacks: result.fallbacks } : undefined;
    this.history?.record(explanation.done(plan, outcome, chosen));
    return result;
  }
}
