import { EngineScheduler, type EngineModel, type EngineRequest, type StepResult } from "./scheduler.js";

/** What a request hears as the steps that advance it end. */
export interface SequenceListener {
  /** Taken into the running batch (the first time only), with the prompt tokens its cached prefix served. */
  admitted(cachedTokens: number): void;
  /** A step produced `count` more tokens of it, the first one included. */
  tokens(count: number): void;
  /** Its last token is out (told after that token). */
  finished(): void;
}

/** How late, against the model's clock, step results were applied: the machine's share of any timing measured. */
export interface StepTiming {
  readonly steps: number;
  readonly lateMs: { readonly total: number; readonly max: number };
}

interface PendingStep {
  readonly result: StepResult;
  /** Requests this step admits for the first time (not again after a preemption), with their cached prompt tokens. */
  readonly firstAdmitted: ReadonlyMap<string, number>;
  /** When its modelled duration is over (performance.now() ms). */
  readonly endsAt: number;
  timer?: NodeJS.Timeout;
}

/**
 * An EngineScheduler in real time: the next step is scheduled as soon as the engine has work and
 * the step before has ended, and its result (tokens, ends) is applied once its modelled duration
 * has passed. Steps chain on the model's clock, not on when a timer happened to fire: a late
 * timer is caught up (every step already due applied at once) rather than slowing the engine
 * down, and a step never starts before the requests it admits arrived.
 */
export class StepLoop {
  private readonly scheduler: EngineScheduler;
  private readonly listeners = new Map<string, SequenceListener>();
  /** Arrival time of requests not admitted yet. */
  private readonly arrivals = new Map<string, number>();
  private pending: PendingStep | undefined;
  /** True while due steps are being applied, so that nothing arms a second timer meanwhile. */
  private applying = false;
  private closed = false;
  private readonly timing = { steps: 0, lateTotal: 0, lateMax: 0 };

  constructor(readonly model: EngineModel) {
    this.scheduler = new EngineScheduler(model);
  }

  /** Requests in the running batch, the ones whose last token is still in the step under way included. */
  get running(): number {
    const finishing = this.pending?.result.finished.filter((id) => this.listeners.has(id)).length ?? 0;
    return this.scheduler.runningCount + finishing;
  }

  get waiting(): number {
    return this.scheduler.waitingCount;
  }

  get steps(): StepTiming {
    return { steps: this.timing.steps, lateMs: { total: this.timing.lateTotal, max: this.timing.lateMax } };
  }

  fits(tokens: number): boolean {
    return this.scheduler.fits(tokens);
  }

  /** Adds the sequences of one request together, so that an idle engine's next step can take them all (as vLLM adds a batched prompt's). */
  add(sequences: ReadonlyArray<{ readonly request: EngineRequest; readonly listener: SequenceListener }>): void {
    if (this.closed) throw new Error("the engine's step loop is closed");
    const now = performance.now();
    for (const { request, listener } of sequences) {
      this.scheduler.add(request);
      this.listeners.set(request.id, listener);
      this.arrivals.set(request.id, now);
    }
    if (this.pending === undefined && !this.applying) this.arm(this.next(now));
  }

  /** Drops a request wherever it is (waiting, running, in the step under way); nothing more is told of it. */
  abort(id: string): void {
    if (!this.listeners.delete(id)) return;
    this.arrivals.delete(id);
    this.scheduler.abort(id);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.pending?.timer);
    this.pending = undefined;
    for (const id of [...this.listeners.keys()]) this.abort(id);
  }

  /** Schedules the step that starts once `earliest` has passed and its new requests have arrived; undefined when idle. */
  private next(earliest: number): PendingStep | undefined {
    if (!this.scheduler.busy) return undefined;
    const result = this.scheduler.step();
    if (result.durationMs <= 0) throw new Error("the engine has work but its step scheduled nothing");
    let startsAt = earliest;
    const firstAdmitted = new Map<string, number>();
    for (const [id, cached] of result.admitted) {
      const arrivedAt = this.arrivals.get(id);
      if (arrivedAt === undefined) continue;
      startsAt = Math.max(startsAt, arrivedAt);
      firstAdmitted.set(id, cached);
      this.arrivals.delete(id);
    }
    return { result, firstAdmitted, endsAt: startsAt + result.durationMs };
  }

  private arm(step: PendingStep | undefined): void {
    this.pending = step;
    if (step !== undefined) step.timer = setTimeout(() => this.due(), Math.max(0, step.endsAt - performance.now()));
  }

  private due(): void {
    const now = performance.now();
    let step = this.pending;
    this.pending = undefined;
    this.applying = true;
    try {
      while (step !== undefined && step.endsAt <= now && !this.closed) {
        this.apply(step, now - step.endsAt);
        step = this.next(step.endsAt);
      }
    } finally {
      this.applying = false;
    }
    if (!this.closed) this.arm(step);
  }

  private apply({ result, firstAdmitted }: PendingStep, lateMs: number): void {
    this.timing.steps += 1;
    this.timing.lateTotal += lateMs;
    this.timing.lateMax = Math.max(this.timing.lateMax, lateMs);
    // A listener may abort its request (a fault, a client gone): look each one up when it is told.
    for (const [id, cached] of firstAdmitted) this.listeners.get(id)?.admitted(cached);
    for (const [id, count] of result.tokens) this.listeners.get(id)?.tokens(count);
    for (const id of result.finished) {
      const listener = this.listeners.get(id);
      this.listeners.delete(id);
      listener?.finished();
    }
  }
}
