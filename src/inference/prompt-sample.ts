import { approximateTokens } from "./estimate.js";

/**
 * Characters counted exactly out of a prompt too long to count whole, at most: ~1 ms with o200k,
 * and the price lands within ~1 % of the whole count (bench:tokens).
 */
export const SAMPLE_CHARS = 8192;
const WINDOWS = 16;

/** How far a window edge moves to reach a word boundary; CJK text has none, and is cut anywhere. */
const ALIGN_CHARS = 24;

/**
 * `at`, moved forward onto the next whitespace: tokenizers attach a space to the word after it,
 * so a window from one space to the next holds whole tokens. A word cut in two, or a dangling
 * space, costs a token more than it does in the whole text and would bias every window upward.
 */
function wordEdge(text: string, at: number): number {
  if (at === 0 || at >= text.length) return at;
  for (let i = at; i < Math.min(text.length, at + ALIGN_CHARS); i++) {
    const code = text.charCodeAt(i);
    if (code === 0x20 || code === 0x0a || code === 0x09 || code === 0x0d) return i;
  }
  return at;
}

const isLowSurrogate = (code: number): boolean => code >= 0xdc00 && code <= 0xdfff;

/**
 * A prompt too long to count whole, priced from windows spread evenly over it: their exact count
 * scales the estimate of the whole, so a prompt whose language or content changes along the way
 * (English then Chinese, prose then code) is still priced by what it holds.
 */
export interface PromptSample {
  windows: string[];
  /** approximateTokens() of the whole text. */
  estimate: number;
  /** The characters the windows were cut for. */
  chars: number;
}

export function samplePrompt(text: string, chars = SAMPLE_CHARS): PromptSample {
  const width = Math.max(1, Math.floor(chars / WINDOWS));
  const stride = text.length / WINDOWS;
  const windows: string[] = [];
  for (let i = 0; i < WINDOWS; i++) {
    let start = wordEdge(text, Math.floor(i * stride));
    let end = wordEdge(text, Math.min(text.length, start + width));
    // Never start or end a window between the halves of a surrogate pair.
    if (isLowSurrogate(text.charCodeAt(start))) start += 1;
    if (end < text.length && isLowSurrogate(text.charCodeAt(end))) end += 1;
    windows.push(text.slice(start, Math.max(start, end)));
  }
  return { windows, estimate: approximateTokens(text), chars };
}

/** The same sample with each window cut to its share of `chars` (a slower tokenizer counts less). */
export function narrowSample(sample: PromptSample, chars: number): PromptSample {
  if (chars >= sample.chars) return sample;
  const width = Math.max(1, Math.floor(chars / WINDOWS));
  const windows = sample.windows.map((window) => (window.length <= width ? window : window.slice(0, wordEdge(window, width))));
  return { windows, estimate: sample.estimate, chars };
}

/** The whole prompt's tokens: its estimate scaled by the windows' exact count over their estimate. */
export function extrapolate(sample: PromptSample, windowTokens: number): number {
  const windowEstimate = sample.windows.reduce((sum, window) => sum + approximateTokens(window), 0);
  return windowEstimate === 0 ? sample.estimate : Math.round((sample.estimate * windowTokens) / windowEstimate);
}
