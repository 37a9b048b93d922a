import { describe, expect, it } from "vitest";
import { PrefixIndex } from "../../src/scheduling/prefix-index.js";

describe("PrefixIndex", () => {
  it("matches an engine's leading blocks up to the first it lacks", () => {
    const index = new PrefixIndex();
    index.record("a", [1, 2, 3]);
    expect(index.matched("a", [1, 2, 3, 4])).toBe(3);
    expect(index.matched("a", [1, 9, 3])).toBe(1);
    expect(index.matched("b", [1, 2])).toBe(0);
  });

  it("keeps each engine within its share of the cap (at least its last request's blocks), dropping its least recently used", () => {
    const index = new PrefixIndex(100);
    index.record("a", Array.from({ length: 80 }, (_, i) => i));
    index.record("b", Array.from({ length: 80 }, (_, i) => 1000 + i));
    expect(index.size).toBe(160);
    // Recorded again, a's blocks are trimmed to its share of two engines: the oldest (0…29) go.
    index.record("a", [79]);
    expect(index.size).toBe(130);
    expect(index.matched("a", [0])).toBe(0);
    expect(index.matched("a", [30, 31])).toBe(2);
  });
});
