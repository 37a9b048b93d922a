/**
 * Engine health from the traffic itself (passive, like Envoy's outlier detection): an engine
 * that fails `ejectAfterErrors` times in a row is left out of picking for a backoff period
 * that doubles on each ejection in a row; when it comes back (and when an engine is new), it
 * warms up over `slowStartSeconds`, because an empty queue would otherwise draw every pick.
 */
export interface HealthSettings {
  /** Consecutive failures that eject an engine; 0 = never eject. */
  ejectAfterErrors: number;
  /** First ejection's length; each further ejection in a row doubles it, up to `maxEjectSeconds`. */
  ejectSeconds: number;
  maxEjectSeconds: number;
  /** Warm-up after an ejection ends or an engine appears; 0 = none. */
  slowStartSeconds: number;
}

interface EngineState {
  consecutiveErrors: number;
  /** Ejections without a success in between: the backoff exponent. */
  ejections: number;
  /** Out of picking until then (ms since the epoch); 0 = not ejected. */
  ejectedUntil: number;
  /** Warming up from then (ms since the epoch); 0 = warm. */
  warmingSince: number;
}

/** What the inference layer reports about the engine that took a request. */
export interface HealthReporter {
  succeeded(engine: string): void;
  failed(engine: string): void;
}

export class EngineHealth implements HealthReporter {
  private readonly engines = new Map<string, EngineState>();

  constructor(
    private settings: HealthSettings,
    private readonly now: () => number = Date.now,
    private readonly onEject: (engine: string, seconds: number) => void = () => undefined,
  ) {}

  configure(settings: HealthSettings): void {
    this.settings = settings;
  }

  succeeded(engine: string): void {
    const state = this.engines.get(engine);
    if (state === undefined) return;
    state.consecutiveErrors = 0;
    state.ejections = 0;
    this.forgetIfPlain(engine, state);
  }

  failed(engine: string): void {
    const { ejectAfterErrors, ejectSeconds, maxEjectSeconds, slowStartSeconds } = this.settings;
    if (ejectAfterErrors === 0) return;
    const state = this.stateOf(engine);
    // Requests already under way when it was ejected report too: they must not extend it.
    if (state.ejectedUntil > this.now()) return;
    state.consecutiveErrors += 1;
    if (state.consecutiveErrors < ejectAfterErrors) return;
    const seconds = Math.min(ejectSeconds * 2 ** state.ejections, maxEjectSeconds);
    state.ejections += 1;
    state.consecutiveErrors = 0;
    state.ejectedUntil = this.now() + seconds * 1000;
    state.warmingSince = slowStartSeconds > 0 ? state.ejectedUntil : 0;
    this.onEject(engine, seconds);
  }

  /** A new engine (config reload, DNS): it warms up before it takes its full share. */
  added(engine: string): void {
    if (this.settings.slowStartSeconds > 0) this.stateOf(engine).warmingSince = this.now();
  }

  /** False while the engine is ejected. */
  eligible(engine: string): boolean {
    const state = this.engines.get(engine);
    return state === undefined || state.ejectedUntil <= this.now();
  }

  /**
   * How far from warm the engine is: 1 when its warm-up has just begun, falling linearly to 0
   * at `slowStartSeconds`. The scorer adds this share of a fully loaded engine's score.
   */
  coldness(engine: string): number {
    const state = this.engines.get(engine);
    if (state === undefined || state.warmingSince === 0) return 0;
    const span = this.settings.slowStartSeconds * 1000;
    const elapsed = this.now() - state.warmingSince;
    if (span <= 0 || elapsed >= span) {
      state.warmingSince = 0;
      this.forgetIfPlain(engine, state);
      return 0;
    }
    return elapsed < 0 ? 1 : 1 - elapsed / span;
  }

  private stateOf(engine: string): EngineState {
    let state = this.engines.get(engine);
    if (state === undefined) {
      state = { consecutiveErrors: 0, ejections: 0, ejectedUntil: 0, warmingSince: 0 };
      this.engines.set(engine, state);
    }
    return state;
  }

  /** Healthy and warm engines keep no state, so engines that went away are not remembered. */
  private forgetIfPlain(engine: string, state: EngineState): void {
    if (state.consecutiveErrors === 0 && state.ejections === 0 && state.warmingSince === 0 && state.ejectedUntil <= this.now()) {
      this.engines.delete(engine);
    }
  }
}
