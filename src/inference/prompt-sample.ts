import { approximateTokens, countingCost, sizeOf, type TextSize } from "./estimate.js";

/**
 * What is counted exactly out of a prompt too long to count whole, at most, in countingCost
 * units (16 Ki ASCII characters, ~650 Chinese ones): ~1–3 ms with o200k, and the price lands
 * within ~1–2 % of the whole count (bench:tokens).
 */
export const SAMPLE_COST = 16_384;
/** Up to 16 windows spread over the prompt, each of at least 64 characters (fewer windows when the budget is small). */
const MAX_WINDOWS = 16;
const MIN_WINDOW_CHARS = 64;

/** How far a window edge moves to reach a word boundary; past that, it cuts where it is. */
const ALIGN_CHARS = 24;

/** Whitespace, and CJK or fullwidth punctuation: where pre-tokenizers start a new piece. */
function isPieceStart(code: number): boolean {
  return code === 0x20 || code === 0x0a || code === 0x09 || code === 0x0d || (code >= 0x3000 && code <= 0x303f) || (code >= 0xff00 && code <= 0xff65);
}

/**
 * The start of a piece (a space, which tokenizers attach to the word after it, or a CJK
 * punctuation mark) near `at`: the first at or after it when `forward`, else the last at or
 * before it, but never before `floor`. A window from one piece start to the next holds whole
 * tokens; a word cut in two costs a token more than it does in the whole text and would bias
 * every window upward. Without a piece start within reach, `at` itself.
 */
function pieceStart(text: string, at: number, forward: boolean, floor = 0): number {
  if (at <= 0 || at >= text.length) return at;
  if (forward) {
    for (let i = at; i < Math.min(text.length, at + ALIGN_CHARS); i++) if (isPieceStart(text.charCodeAt(i))) return i;
  } else {
    for (let i = at; i > Math.max(floor, at - ALIGN_CHARS); i--) if (isPieceStart(text.charCodeAt(i))) return i;
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
  /** The countingCost the windows were cut for. */
  cost: number;
}

/** `size`: the text's, when the caller has measured it already. */
export function samplePrompt(text: string, cost = SAMPLE_COST, size: TextSize = sizeOf(text)): PromptSample {
  // The budget in characters of this text: fewer where each costs more to count.
  const chars = Math.floor((cost * text.length) / Math.max(1, countingCost(size)));
  const count = Math.max(1, Math.min(MAX_WINDOWS, Math.floor(chars / MIN_WINDOW_CHARS)));
  const width = Math.max(1, Math.floor(chars / count));
  const stride = text.length / count;
  const windows: string[] = [];
  for (let i = 0; i < count; i++) {
    // Starts move forward, ends back: a window never outgrows its share of the budget.
    let start = pieceStart(text, Math.floor(i * stride), true);
    let end = pieceStart(text, Math.min(text.length, start + width), false, start);
    // Never start or end a window between the halves of a surrogate pair.
    if (isLowSurrogate(text.charCodeAt(start))) start += 1;
    if (end < text.length && isLowSurrogate(text.charCodeAt(end))) end += 1;
    windows.push(text.slice(start, Math.max(start, end)));
  }
  return { windows, estimate: approximateTokens(size), cost };
}

/** The same sample with each window cut to its share of a smaller `cost` (a slower tokenizer counts less). */
export function narrowSample(sample: PromptSample, cost: number): PromptSample {
  if (cost >= sample.cost) return sample;
  const keep = cost / sample.cost;
  const windows = sample.windows.map((window) => window.slice(0, pieceStart(window, Math.max(1, Math.floor(window.length * keep)), false)));
  return { windows, estimate: sample.estimate, cost };
}

/** The whole prompt's tokens: its estimate scaled by the windows' exact count over their estimate. */
export function extrapolate(sample: PromptSample, windowTokens: number): number {
  const windowEstimate = sample.windows.reduce((sum, window) => sum + approximateTokens(window), 0);
  return windowEstimate === 0 ? sample.estimate : Math.round((sample.estimate * windowTokens) / windowEstimate);
}
