/** Engines whose rhythm is kept; past it, the longest known is forgotten (and learnt again if it streams). */
const MAX_ENGINES = 16_384;
/** A gap longer than this is no step: the engine was idle, or none of its streams passes here. */
const MAX_STEP_MS = 2_000;
/** How far one step's interval moves the estimate. */
const LEARNING = 0.2;
/** A gap of more steps than this is a pause; as long since the last step, the phase is unknown. */
const PAUSE_STEPS = 4;

interface Rhythm {
  /** When the last step ended (the first event of it seen). */
  last: number;
  /** Milliseconds between steps; 0 until two have been seen. */
  interval: number;
}

/**
 * Each engine's step rhythm, as its streams show it: a continuous-batching engine emits one token
 * for every running sequence at the end of each step, so the streamed events from an engine arrive
 * together once a step, and a request sent there waits for the step under way to end before its
 * own prefill can start. Events closer than half a step are the same step (seen on several
 * streams); the interval is a moving estimate of the rest (steps vary: one carrying a prefill
 * chunk is longer). It only collects; the step-phase scorer reads it.
 */
export class EngineSteps {
  private readonly engines = new Map<string, Rhythm>();

  constructor(private readonly now: () => number = () => performance.now()) {}

  /** A streamed event from this engine arrived now. */
  seen(engine: string): void {
    const at = this.now();
    const rhythm = this.engines.get(engine);
    if (rhythm === undefined) {
      if (this.engines.size >= MAX_ENGINES) this.engines.delete(this.engines.keys().next().value!);
      this.engines.set(engine, { last: at, interval: 0 });
      return;
    }
    const gap = at - rhythm.last;
    if (gap > MAX_STEP_MS) {
      rhythm.last = at;
      return;
    }
    if (rhythm.interval === 0) {
      if (gap > 0) rhythm.interval = gap;
      rhythm.last = at;
      return;
    }
    if (gap < rhythm.interval / 2) return;
    // Longer than a few steps: a pause (nothing of it streamed here), not a step.
    if (gap <= PAUSE_STEPS * rhythm.interval) rhythm.interval += LEARNING * (gap - rhythm.interval);
    rhythm.last = at;
  }

  /**
   * How long a request sent now would wait there before the engine's next step begins (near a whole
   * interval just after a step ended, near 0 just before the next ends), and the interval.
   * Undefined for an engine with no known rhythm, or none lately (idle, it starts a step at once).
   */
  rhythm(engine: string): { waitMs: number; intervalMs: number } | undefined {
    const rhythm = this.engines.get(engine);
    if (rhythm === undefined || rhythm.interval === 0) return undefined;
    const since = this.now() - rhythm.last;
    if (since < 0 || since > PAUSE_STEPS * rhythm.interval) return undefined;
    return { waitMs: rhythm.interval - (since % rhythm.interval), intervalMs: rhythm.interval };
  }
}
