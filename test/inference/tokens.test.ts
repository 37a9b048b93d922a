import { countTokens } from "gpt-tokenizer/encoding/o200k_base";
import { describe, expect, it } from "vitest";
import { bodilessRequest } from "../../src/inference/request.js";
import { approximateTokens } from "../../src/inference/estimate.js";
import { TokenCounter } from "../../src/inference/tokens.js";

describe("TokenCounter", () => {
  const counter = new TokenCounter({ countWholeUpTo: 10_000, imageTokens: 765, audioTokens: 200 });

  it("counts ordinary text exactly with o200k", () => {
    const text = "The quick brown fox jumps over the lazy dog. 敏捷的棕色狐狸。";
    expect(counter.count(text)).toBe(countTokens(text));
    expect(counter.count("")).toBe(0);
  });

  it("prices text above the size threshold from a sample of it, within 3 % of the exact count", () => {
    let counted = 0;
    const spy = { count: (text: string) => ((counted += text.length), countTokens(text)) };
    const sampling = new TokenCounter({ countWholeUpTo: 65_536, imageTokens: 765, audioTokens: 200 }, spy);
    const text = "lorem ipsum dolor sit amet, ".repeat(4000) + "敏捷的棕色狐狸，跳过了懒狗。\n".repeat(2000);
    const priced = sampling.count(text) as number;
    // A quarter of the threshold's cost: 16 Ki of ASCII, far fewer of Chinese.
    expect(counted).toBeLessThanOrEqual(16_384);
    expect(Math.abs(priced / countTokens(text) - 1)).toBeLessThan(0.03);
  });

  it("estimates everything with a threshold of 0", () => {
    const estimating = new TokenCounter({ countWholeUpTo: 0, imageTokens: 765, audioTokens: 200 });
    expect(estimating.count("hello world")).toBe(approximateTokens("hello world"));
  });

  it("estimates long runs a pre-tokenizer keeps whole (quadratic for BPE) and counts the rest exactly", () => {
    const run = "x".repeat(5000);
    expect(counter.count(`hello ${run} world`)).toBe(countTokens("hello   world") + approximateTokens(run));
    const rule = "=".repeat(100);
    expect(counter.count(`a\n${rule}\nb`)).toBe(countTokens("a\n \nb") + approximateTokens(rule));
    // A paragraph with no whitespace at all is one pre-token to SentencePiece-style tokenizers.
    const paragraph = "敏捷的棕色狐狸跳过了懒狗。".repeat(100);
    const roomy = new TokenCounter({ countWholeUpTo: 100_000, imageTokens: 765, audioTokens: 200 });
    expect(roomy.count(paragraph)).toBe(countTokens(" ") + approximateTokens(paragraph));
  });

  it("counts Chinese exactly: its punctuation cuts it into short pre-tokens", () => {
    const chinese = "清晨的港口慢慢醒来。渔民们把渔网拖过潮湿的石板路，面包师已经忙了两个小时，他把面包一条条摆进橱窗，一边和收音机里的天气预报争论。镇上没有人相信天气预报。";
    expect(chinese.length).toBeGreaterThan(64);
    expect(counter.count(chinese)).toBe(countTokens(chinese));
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

  it("a 2 MB mixed prompt is priced from a sample of it, within 3 % (timing: npm run bench:tokens)", () => {
    let counted = 0;
    const spy = { count: (text: string) => ((counted += text.length), countTokens(text)) };
    const sampling = new TokenCounter({ countWholeUpTo: 65_536, imageTokens: 765, audioTokens: 200 }, spy);
    const unit = "The quick brown fox. function f(x) { return x * 2; } 敏捷的棕色狐狸跳过了懒狗。\n";
    const text = unit.repeat(Math.ceil((2 << 20) / unit.length));
    const request = { ...bodilessRequest(), texts: [text], messages: 1 };
    const priced = sampling.promptTokens(request) as number;
    expect(counted).toBeLessThanOrEqual(16_384);
    expect(Math.abs(priced / (countTokens(text) + 6) - 1)).toBeLessThan(0.03);
  });

  it("prices a prompt for the pick from a sample of countAtPickUpTo's cost, its whole count to follow; a cheaper one at once", () => {
    let counted = 0;
    const spy = { count: (text: string) => ((counted += text.length), countTokens(text)) };
    const pricing = new TokenCounter({ countWholeUpTo: 65_536, countAtPickUpTo: 512, imageTokens: 765, audioTokens: 200 }, spy);
    const text = "Route each request to the engine whose next step starts soonest; ".repeat(300);
    const request = { ...bodilessRequest(), texts: [text], messages: 1 };
    const price = pricing.pickPrice(request);
    expect(counted).toBeLessThanOrEqual(512);
    expect(Math.abs((price.tokens as number) / (countTokens(text) + 6) - 1)).toBeLessThan(0.1);
    counted = 0;
    expect(price.exact?.()).toBe(countTokens(text) + 6);
    expect(counted).toBe(text.length);

    const short = { ...bodilessRequest(), texts: ["hello world"], messages: 1 };
    expect(pricing.pickPrice(short)).toEqual({ tokens: countTokens("hello world") + 6 });
    // 0: the estimate for the pick.
    const estimating = new TokenCounter({ countWholeUpTo: 65_536, countAtPickUpTo: 0, imageTokens: 765, audioTokens: 200 });
    expect(estimating.pickPrice(request).tokens).toBe(approximateTokens(text) + 6);
    // Not below countWholeUpTo, or absent: counted before the pick, as promptTokens counts.
    for (const atPick of [65_536, undefined]) {
      const whole = new TokenCounter({ countWholeUpTo: 65_536, countAtPickUpTo: atPick, imageTokens: 765, audioTokens: 200 });
      expect(whole.pickPrice(request)).toEqual({ tokens: countTokens(text) + 6 });
    }
  });
});
