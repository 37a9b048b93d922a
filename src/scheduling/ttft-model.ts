import type { EngineLoad, LoadWeights } from "../load/store.js";

/**
 * Feature order: a constant, the request's own prompt left to prefill on the engine (thousands of
 * tokens), then the engine's live numbers — requests, requests in prefill, prompt tokens in
 * prefill and tokens held (the tokens in thousands, so that every feature is of order 1 to 100).
 */
const SIZE = 6;
const KILO = 1000;

/**
 * What the model starts from before it has seen a first token: an engine that prefills about 50,000
 * tokens a second and takes a step or two to answer, so that ranking starts out as a sensible load
 * score. The spread is wide, so a few dozen first tokens move it to the pool's own figures.
 */
const PRIOR = [10, 20, 0.5, 2, 20, 0.05];
const PRIOR_VARIANCE = [1e4, 1e3, 10, 100, 1e3, 10];

/** How much each first token weighs against the last ones': an effective memory of ~1,000 observations. */
const FORGETTING = 0.999;
/** Bound on the covariance's trace: without new variety in the features, forgetting alone would inflate it without end. */
const MAX_TRACE = 1e6;
/** A residual counts at most this many typical errors (plus a floor in ms), so one stalled engine does not rewrite the model. */
const CLIP_ERRORS = 4;
const CLIP_FLOOR_MS = 10;

/** What one prediction is made from: the engine's load as the pick weighed it, and the request's own prompt still to prefill there. */
export interface TtftFeatures {
  load: EngineLoad;
  uncachedTokens: number;
}

/** The model as costs in ms: a constant, per uncached prompt token of the request, and per unit of each live number. */
export interface TtftCosts {
  baseMs: number;
  perUncachedToken: number;
  perUnit: LoadWeights;
}

const vectorOf = ({ load, uncachedTokens }: TtftFeatures): number[] => [
  1,
  uncachedTokens / KILO,
  load.requests,
  load.prefillRequests,
  load.prefillTokens / KILO,
  load.tokensHeld / KILO,
];

/**
 * Time to first token on one pool's engines, learnt online from the first tokens the sidecar sees:
 * a linear model, fitted by recursive least squares with forgetting. It predicts, and so ranks, with
 * every coefficient but the constant taken as at least 0 (more load never predicts a faster answer,
 * so a noisy fit cannot send traffic to the busiest engine), while the fit itself stays unconstrained
 * (a clamp inside the fit would push correlated coefficients up instead). Linear in the live
 * numbers, so the store's atomic pick can rank by it.
 */
export class TtftModel {
  private readonly theta = Float64Array.from(PRIOR);
  /** Covariance of the coefficients, row-major SIZE × SIZE. */
  private readonly covariance = new Float64Array(SIZE * SIZE);
  /** Running mean absolute error (ms), the clip's scale. */
  private typicalError = 100;
  private seen = 0;

  constructor() {
    PRIOR_VARIANCE.forEach((variance, i) => (this.covariance[i * SIZE + i] = variance));
  }

  /** First tokens learnt from. */
  get observations(): number {
    return this.seen;
  }

  predict(features: TtftFeatures): number {
    return this.dot(vectorOf(features), true);
  }

  costs(): TtftCosts {
    const t = this.theta.map((value, i) => (i === 0 ? value : Math.max(0, value)));
    return {
      baseMs: t[0]!,
      perUncachedToken: t[1]! / KILO,
      perUnit: { requests: t[2]!, prefillRequests: t[3]!, prefillTokens: t[4]! / KILO, tokensHeld: t[5]! / KILO },
    };
  }

  /** θ·x, with the slopes taken as at least 0 when `ranked`. */
  private dot(x: readonly number[], ranked: boolean): number {
    let sum = this.theta[0]! * x[0]!;
    for (let i = 1; i < SIZE; i++) sum += (ranked ? Math.max(0, this.theta[i]!) : this.theta[i]!) * x[i]!;
    return sum;
  }

  /** A first token came `observedMs` after a pick made on these features. Values that are not finite and ≥ 0 are ignored. */
  learn(features: TtftFeatures, observedMs: number): void {
    const x = vectorOf(features);
    if (!(observedMs >= 0 && Number.isFinite(observedMs)) || !x.every(Number.isFinite)) return;
    const P = this.covariance;
    const Px = new Float64Array(SIZE);
    let xPx = 0;
    for (let i = 0; i < SIZE; i++) {
      let sum = 0;
      for (let j = 0; j < SIZE; j++) sum += P[i * SIZE + j]! * x[j]!;
      Px[i] = sum;
      xPx += x[i]! * sum;
    }
    const error = observedMs - this.dot(x, false);
    const bound = CLIP_ERRORS * this.typicalError + CLIP_FLOOR_MS;
    const clipped = Math.max(-bound, Math.min(bound, error));
    this.typicalError += (Math.abs(clipped) - this.typicalError) / Math.min(this.seen + 1, 100);
    const denominator = FORGETTING + xPx;
    let trace = 0;
    for (let i = 0; i < SIZE; i++) {
      const gain = Px[i]! / denominator;
      this.theta[i] = this.theta[i]! + gain * clipped;
      for (let j = 0; j < SIZE; j++) P[i * SIZE + j] = P[i * SIZE + j]! - gain * Px[j]!;
      trace += P[i * SIZE + i]!;
    }
    if (trace < MAX_TRACE) for (let k = 0; k < P.length; k++) P[k] = P[k]! / FORGETTING;
    this.seen += 1;
  }
}
