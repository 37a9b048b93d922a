import { cpus, loadavg } from "node:os";

/** The machine the figures come from: a shared 2-core box and a quiet 16-core one give different numbers. */
export function machine(): string {
  const [one, five, fifteen] = loadavg().map((load) => load.toFixed(2));
  return `${cpus().length} cores (${cpus()[0]?.model.trim() ?? "?"}), load average ${one} ${five} ${fifteen}, Node ${process.version}`;
}

/**
 * A benchmark's frame, the same in every one: what it measures and on which machine (cores, load
 * average at the start), progress while it runs, each target met or MISSED, and how long it took.
 * Figures from a shared 2-core box and from a quiet 16-core one differ; the header says which.
 */
export class BenchRun {
  private readonly started = performance.now();
  private readonly verdicts: boolean[] = [];

  constructor(name: string, what: string) {
    console.log(`${name} — ${what}`);
    console.log(`machine: ${machine()}`);
  }

  private elapsed(): string {
    return `${((performance.now() - this.started) / 1000).toFixed(0)} s`;
  }

  /** A line while it runs, stamped with the time since the start. */
  progress(text: string): void {
    console.log(`  [${this.elapsed()}] ${text}`);
  }

  /** One target's line, ending in met or MISSED. */
  target(met: boolean, text: string): void {
    this.judged(met);
    console.log(`${text}: ${met ? "met" : "MISSED"}`);
  }

  /** A target whose verdict the benchmark printed in its own table. */
  judged(met: boolean): void {
    this.verdicts.push(met);
  }

  /** The closing line: how many targets were met, and the run's duration. */
  finish(): void {
    const missed = this.verdicts.filter((met) => !met).length;
    const count = this.verdicts.length;
    const summary = missed === 0 ? `all ${count} target(s) met` : `${missed} of ${count} target(s) MISSED`;
    console.log(`\n${summary}; took ${this.elapsed()}`);
  }
}
