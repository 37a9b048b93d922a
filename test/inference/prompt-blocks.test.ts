import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { BLOCK_CHARS, MAX_BLOCKS, blockTokens, promptBlocks } from "../../src/inference/prompt-blocks.js";

describe("promptBlocks", () => {
  it("hashes each full 64-character block, chained: prompts share exactly the leading blocks of their common leading text", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 600 }), fc.string({ maxLength: 300 }), fc.string({ maxLength: 300 }), (shared, left, right) => {
        const a = promptBlocks([shared + left]);
        const b = promptBlocks([shared + right]);
        const full = Math.floor(shared.length / BLOCK_CHARS);
        expect(a.slice(0, full)).toEqual(b.slice(0, full));
        expect(a).toHaveLength(Math.floor((shared.length + left.length) / BLOCK_CHARS));
        // Past the common text, a block differs unless its text is the same.
        const common = [...(shared + left)].findIndex((char, i) => char !== (shared + right)[i]);
        const differAt = common < 0 ? Infinity : Math.floor(common / BLOCK_CHARS);
        if (differAt < Math.min(a.length, b.length)) expect(a[differAt]).not.toBe(b[differAt]);
      }),
      { numRuns: 300 },
    );
  });

  it("reads the texts joined by newlines, as they are counted, and stops at MAX_BLOCKS", () => {
    const system = "s".repeat(100);
    const user = "u".repeat(100);
    expect(promptBlocks([system, user])).toEqual(promptBlocks([`${system}\n${user}`]));
    expect(promptBlocks(["x".repeat(BLOCK_CHARS * (MAX_BLOCKS + 10))])).toHaveLength(MAX_BLOCKS);
    expect(promptBlocks([])).toEqual([]);
    expect(promptBlocks(["short"])).toEqual([]);
  });
});

describe("blockTokens", () => {
  it("is the prompt's tokens per character times a block's characters, the joining newlines counted", () => {
    // 2 × 63 characters and one newline: 127 characters for 254 tokens, so 2 tokens a character.
    expect(blockTokens(["a".repeat(63), "b".repeat(63)], 254)).toBe(2 * BLOCK_CHARS);
    expect(blockTokens(["x".repeat(4 * BLOCK_CHARS)], 64)).toBe(16);
    expect(blockTokens([], 10)).toBe(0);
    expect(blockTokens([""], 10)).toBe(0);
  });
});
