import type { EngineProbe } from "./probe.js";

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
  /** The engine answered with an error of its own (5xx). */
  failed(engine: string): void;
  /**
   * No response reached us: the engine may be unreachable, or the client gave up first — the two
   * look the same on the stream. Counts only if the engine itself shows it (see EngineProbe).
   */
  unanswered(engine: string): void;
}

/** A probe's answer serves every unanswered request of its engine for this long, so resets cannot flood an engine with probes. */
const PROBE_REUSE_MS = 1000;

export class EngineHealth implements HealthReporter {
  private readonly engines = new Map<string, EngineState>();
  /** The last probe of each engine (in flight or answered), and when it started. */
  private readonly probes = new Map<string, { startedAt: number; reachable: Promise<boolean> }>();

  constructor(
    private settings: HealthSettings,
    private readonly now: () => number = Date.now,
    private readonly onEject: (engine: string, seconds: number) => void = () => undefined,
    /** Without one, an unanswered request is never held against its engine. */
    private readonly probe?: EngineProbe,
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

  /**
   * No response reached the sidecar: it counts as a failure only when the engine itself cannot be
   * reached (the probe fails). A client that gave up before the response finds the engine up, and
   * counts nothing, however many do.
   */
  unanswered(engine: string): void {
    if (this.settings.ejectAfterErrors === 0 || this.probe === undefined) return;
    let last = this.probes.get(engine);
    if (last === undefined || this.now() - last.startedAt > PROBE_REUSE_MS) {
      last = { startedAt: this.now(), reachable: this.probe(engine) };
      this.probes.set(engine, last);
      const probe = last;
      // Forget the answer once it is stale, so engines that went away are not remembered.
      void probe.reachable.then(() =>
        setTimeout(() => this.probes.get(engine) === probe && this.probes.delete(engine), PROBE_REUSE_MS).unref(),
      );
    }
    // The probe never rejects; a throw from the ejection's log line must not reach the process.
    last.reachable.then((reachable) => (reachable ? undefined : this.failed(engine))).catch(() => undefined);
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
