import { countTokens } from "gpt-tokenizer/encoding/o200k_base";
import { describe, expect, it } from "vitest";
import { approximateTokens, TokenCounter } from "../../src/inference/tokens.js";

describe("TokenCounter", () => {
  const counter = new TokenCounter({ approximateAboveChars: 10_000 });

  it("counts ordinary text exactly with o200k", () => {
    const text = "The quick brown fox jumps over the lazy dog. 敏捷的棕色狐狸。";
    expect(counter.count(text)).toBe(countTokens(text));
    expect(counter.count("")).toBe(0);
  });

  it("estimates text above the size threshold", () => {
    const text = "lorem ipsum ".repeat(1000);
    expect(counter.count(text)).toBe(approximateTokens(text));
  });

  it("estimates long runs without whitespace (quadratic for BPE) and counts the rest exactly", () => {
    const run = "x".repeat(5000);
    expect(counter.count(`hello ${run} world`)).toBe(countTokens("hello   world") + approximateTokens(run));
  });

  it("approximates ASCII at ~4 characters a token and CJK at ~1", () => {
    expect(approximateTokens("abcdefgh")).toBe(2);
    expect(approximateTokens("狐狸狐狸")).toBe(4);
  });
});
