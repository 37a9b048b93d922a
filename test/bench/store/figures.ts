/** The value at quantile `q` ∈ [0, 1] of `values` (nearest rank); 0 for none. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
}

/** Milliseconds as the bench prints them. */
export const ms = (value: number): string => `${value.toFixed(2)} ms`;

export const count = (value: number): string => Math.round(value).toLocaleString("en");

export const verdict = (met: boolean): string => (met ? "met" : "MISSED");

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The best of 3 runs of a fixed loop: figures from machines of different speed become comparable. */
export function calibration(): string {
  let best = Infinity;
  let sum = 0;
  for (let run = 0; run < 3; run += 1) {
    const started = performance.now();
    for (let i = 0; i < 1e7; i += 1) sum += i * 1.5;
    best = Math.min(best, performance.now() - started);
  }
  // The sum is used, so the loop cannot be optimised away.
  const check = Number.isFinite(sum) ? "" : " (overflow)";
  return `10^7 dependent float adds in JS: ${best.toFixed(0)} ms${check} (one float add's latency, ~4 cycles, each: ~15 ms at 3 GHz)`;
}
