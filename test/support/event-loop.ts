/** The longest wall time, in ms, between turns of the event loop while `work` runs (and one turn after it). */
export async function longestLoopGap(work: () => Promise<unknown>): Promise<number> {
  let last = performance.now();
  let longest = 0;
  let turning = true;
  const turn = (): void => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
    if (turning) setImmediate(turn);
  };
  setImmediate(turn);
  try {
    await work();
    // A block at the very end of the work shows only in the turn after it.
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    turning = false;
  }
  return longest;
}
