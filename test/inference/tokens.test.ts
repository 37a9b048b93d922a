import { countTokens } from "gpt-tokenizer/encoding/o200k_base";
import { describe, expect, it } from "vitest";
import { bodilessRequest } from "../../src/inference/request.js";
import { approximateTokens, TokenCounter } from "../../src/inference/tokens.js";

describe("TokenCounter", () => {
  const counter = new TokenCounter({ approximateAboveChars: 10_000, imageTokens: 765, audioTokens: 200 });

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

  it("approximates ASCII at ~4 characters a token and CJK at ~0.8 tokens a character", () => {
    expect(approximateTokens("abcdefgh")).toBe(2);
    expect(approximateTokens("狐狸".repeat(50))).toBe(80);
    expect(approximateTokens("abcd狐狸狐狸狐")).toBe(5);
  });

  it("prices a request: texts, exact token ids, media estimates and the chat template", () => {
    const request = { ...bodilessRequest(), texts: ["hello", "world"], tokenIds: 7, messages: 2, images: 2, audios: 1 };
    expect(counter.promptTokens(request)).toBe(countTokens("hello\nworld") + 7 + 2 * 765 + 200 + (2 * 3 + 3));
    expect(counter.promptTokens(bodilessRequest())).toBe(0);
  });

  it("a 2 MB mixed prompt is estimated, not tokenized (timing: npm run bench:tokens)", () => {
    const unit = "The quick brown fox. function f(x) { return x * 2; } 敏捷的棕色狐狸跳过了懒狗。\n";
    const text = unit.repeat(Math.ceil((2 << 20) / unit.length));
    const request = { ...bodilessRequest(), texts: [text], messages: 1 };
    expect(counter.promptTokens(request)).toBe(approximateTokens(text) + 6);
  });
});
