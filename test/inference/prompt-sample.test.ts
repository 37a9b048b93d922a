import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { approximateTokens, countingCost } from "../../src/inference/estimate.js";
import { extrapolate, narrowSample, SAMPLE_COST, samplePrompt } from "../../src/inference/prompt-sample.js";

const loneSurrogate = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

describe("prompt samples", () => {
  it("windows spread over the whole text, within the budget, never splitting a surrogate pair", () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom("word ", "🙂", "狐狸", "\n", "x"), { minLength: 2_000, maxLength: 6_000 }), (parts) => {
        const text = parts.join("");
        const sample = samplePrompt(text, 1_024);
        expect(sample.windows.length).toBeGreaterThan(0);
        expect(sample.windows.length).toBeLessThanOrEqual(16);
        expect(sample.windows.join("").length).toBeLessThanOrEqual(1_024 * 1.5);
        for (const window of sample.windows) expect(window).not.toMatch(loneSurrogate);
        expect(sample.estimate).toBe(approximateTokens(text));
      }),
    );
  });

  it("a window starts on whitespace and ends before it: whole words only", () => {
    const text = "alpha beta gamma delta ".repeat(2_000);
    for (const window of samplePrompt(text).windows.slice(1)) expect(window).toMatch(/^ \S.*\S$/s);
  });

  it("takes as many characters as its cost allows: far fewer of Chinese, cut at its punctuation", () => {
    const english = samplePrompt("The harbour town woke slowly, and nobody trusted the forecast. ".repeat(2_000));
    const chinese = samplePrompt("清晨的港口慢慢醒来，渔民们把渔网拖过潮湿的石板路。".repeat(2_000));
    for (const sample of [english, chinese]) {
      const cost = countingCost(sample.windows.join(""));
      // Window ends move back to the last word or clause boundary.
      expect(cost).toBeGreaterThan(SAMPLE_COST * 0.6);
      expect(cost).toBeLessThanOrEqual(SAMPLE_COST * 1.1);
    }
    expect(chinese.windows.join("").length * 10).toBeLessThan(english.windows.join("").length);
    for (const window of chinese.windows.slice(1)) expect(window).toMatch(/^[，。].*[^，。]$/s);
  });

  it("scales the estimate by the windows' exact count over their estimate", () => {
    const sample = samplePrompt("lorem ipsum ".repeat(10_000), 512);
    const windowEstimate = sample.windows.reduce((sum, window) => sum + approximateTokens(window), 0);
    expect(extrapolate(sample, windowEstimate)).toBe(sample.estimate);
    expect(extrapolate(sample, windowEstimate / 2)).toBe(Math.round(sample.estimate / 2));
  });

  it("narrowing cuts each window to its share of a smaller budget, and keeps a sample already within it", () => {
    const sample = samplePrompt("one two three four five six ".repeat(5_000));
    expect(sample.cost).toBe(SAMPLE_COST);
    expect(narrowSample(sample, SAMPLE_COST)).toBe(sample);
    const narrow = narrowSample(sample, 1_024);
    expect(narrow.windows).toHaveLength(sample.windows.length);
    expect(narrow.windows.join("").length).toBeLessThanOrEqual(1_024 * 1.5);
    narrow.windows.forEach((window, i) => expect(sample.windows[i]!.startsWith(window)).toBe(true));
    expect(narrow.estimate).toBe(sample.estimate);
  });
});
