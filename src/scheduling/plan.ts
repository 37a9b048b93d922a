import type { LoadWeights } from "../load/store.js";

/** What the scheduling chain knows of the request it places. */
export interface SchedulingRequest {
  /** Ledger key for the reservation. */
  id: string;
  /** The request's own id (its x-request-id, the API caller's request_id), to explain the pick by. */
  requestId?: string | undefined;
  /** A held request trying again (the queue's retries): only its first saturation is explained, not each retry's. */
  retry?: boolean | undefined;
  model: string | undefined;
  promptTokens: number;
  /** The gateway's subset hint: only these `ip:port` may be picked. Undefined = no hint. */
  subset?: readonly string[] | undefined;
  /** The id is a caller's, not made unique by the sidecar (see `PickRequest.externalId`). */
  externalId?: boolean | undefined;
  /** The chained hashes of the prompt's blocks (inference/prompt-blocks.ts), when a scorer uses them. */
  prefix?: readonly number[] | undefined;
  /** Prompt tokens one of those blocks stands for; absent: the prompt's tokens shared evenly among them. */
  prefixBlockTokens?: number | undefined;
}

/**
 * A pick being planned, the shape of the GIE endpoint picker's cycle: filters narrow the
 * candidates, scorers add their weighted costs, and the store picks the lowest total and reserves
 * it in one atomic step. What depends on live load (saturation, the load score) is only declared
 * here and applied by the store, so that replicas sharing it never race.
 */
export interface PickPlan {
  readonly pool: string;
  candidates: readonly string[];
  /** Cost per candidate (same order) from the request-dependent scorers; set up once the filters are done. */
  bias: number[];
  /** Weights on the live load numbers, each normalised by its largest value among the candidates. */
  loadWeights: LoadWeights;
  /** Cost per unit of each live number, in the bias's units (see `PickRequest.unitWeights`). */
  unitWeights: LoadWeights;
  /** The store drops candidates carrying this many open requests, atomically with the pick; 0 = none. */
  maxRequests: number;
  /** Likewise for requests in prefill; 0 = none. */
  maxPrefillRequests: number;
}

/** Why a filter left nothing to pick from. */
export interface Refusal {
  kind: "outside_subset";
}

export interface Filter {
  /** Narrows the plan's candidates, or refuses the request; a filter on live load sets the plan's bound instead. */
  apply(plan: PickPlan, request: SchedulingRequest): Refusal | undefined;
}

export interface Scorer {
  /** Adds its share times `weight`: a cost per candidate to the bias, and/or weights on the live load the store reads. */
  apply(plan: PickPlan, request: SchedulingRequest, weight: number): void;
}

/** Which engines may be picked now, and how far each is from warm (see pools/health.ts). */
export interface EngineAvailability {
  eligible(engine: string): boolean;
  /** 0 = warm, 1 = just back or new. */
  coldness(engine: string): number;
}
