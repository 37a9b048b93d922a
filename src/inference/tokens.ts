import { approximateTokens, countingCost, sizeOf } from "./estimate.js";
import { extrapolate, narrowSample, SAMPLE_COST, samplePrompt, type PromptSample } from "./prompt-sample.js";
import { promptText, type InferenceRequest } from "./request.js";
import { o200k, type AsyncTextTokenizer } from "./tokenizers/o200k.js";

export interface TokenCounterOptions {
  /**
   * Texts whose countingCost (ASCII characters; others weigh more, as BPE takes longer on them) is
   * at most this are counted whole; costlier ones are priced from a sample, so a huge prompt never
   * stalls the loop (nor a tokenizer's worker). 0: estimate all.
   */
  countWholeUpTo: number;
  /**
   * For the pick, texts costing more than this are priced from a sample of this cost (0: the
   * estimate), and counted as countWholeUpTo says right after the routing reply: a long prompt's
   * count never holds its own pick. Absent, or not below countWholeUpTo: counted before the pick.
   */
  countAtPickUpTo?: number;
  /** Estimated prompt tokens of one image (the pixels are never decoded here). */
  imageTokens: number;
  /** Estimated prompt tokens of one audio clip. */
  audioTokens: number;
}

/** Chat templates add about three tokens per message and three to prime the reply. */
const TOKENS_PER_MESSAGE = 3;
const REPLY_PRIMER_TOKENS = 3;

/** ASCII punctuation and symbols, CJK and fullwidth punctuation: where pre-tokenizers cut words. */
const PUNCTUATION = "!-\\/:-@\\[-`{-~\\u3000-\\u303f\\uff00-\\uff65";

/**
 * BPE merging is quadratic in the length of one pre-token: 50,000 "x" take seconds to tokenize.
 * GPT-style pre-tokenizers (o200k, Llama-3, Qwen, DeepSeek) cut at whitespace and punctuation, so a
 * pre-token is a run of letters (Chinese too, between its punctuation), of punctuation, or of
 * whitespace; SentencePiece-style ones cut at whitespace only. Runs longer than these are
 * estimated instead, so no prompt can stall a tokenizer. Lookbehind keeps the scan linear.
 */
const LONG_RUN = new RegExp(`[^\\s${PUNCTUATION}]{64,}|[${PUNCTUATION}]{64,}|\\s{64,}|(?<!\\S)\\S{1024,}`, "g");

/** `tokens + more`, with no promise when the tokens are already counted. */
function plus(tokens: number | Promise<number>, more: number): number | Promise<number> {
  return typeof tokens === "number" ? tokens + more : tokens.then((counted) => counted + more);
}

/** A prompt's price for the pick; `exact`, when the pick had a sample's price, is its full count, to take after the pick. */
export interface PromptPrice {
  tokens: number | Promise<number>;
  exact?: () => number | Promise<number>;
}

/**
 * Counts prompt text with one tokenizer (o200k unless told). A text longer than the threshold is
 * priced from a sample of it (prompt-sample.ts); with `null` (the pool's tokenizer is still
 * loading) every text is estimated. The count is a number with a synchronous tokenizer (o200k), a
 * promise with one in a worker thread.
 */
export class TokenCounter {
  constructor(
    private readonly options: TokenCounterOptions,
    private readonly tokenizer: AsyncTextTokenizer | null = o200k,
  ) {}

  /** The prompt cost P of one request: texts, token ids, media estimates and template overhead. */
  promptTokens(request: InferenceRequest): number | Promise<number> {
    return this.price(request, this.options.countWholeUpTo);
  }

  /** P for the pick, at most countAtPickUpTo's cost; when that is less than counting it whole, the whole count to follow. */
  pickPrice(request: InferenceRequest): PromptPrice {
    const whole = this.options.countWholeUpTo;
    const atPick = Math.min(this.options.countAtPickUpTo ?? whole, whole);
    if (atPick === whole || this.tokenizer === null) return { tokens: this.price(request, whole) };
    const text = request.sample === undefined ? promptText(request) : undefined;
    if (text !== undefined && text.length <= atPick && countingCost(sizeOf(text)) <= atPick) return { tokens: this.price(request, whole, text) };
    return { tokens: this.price(request, atPick, text), exact: () => this.price(request, whole, text) };
  }

  count(text: string): number | Promise<number> {
    return this.countUpTo(text, this.options.countWholeUpTo);
  }

  /** Texts costing more than `threshold` are priced from a sample of that cost (the estimate at 0). */
  private price(request: InferenceRequest, threshold: number, text = request.sample === undefined ? promptText(request) : ""): number | Promise<number> {
    const template = request.messages > 0 ? request.messages * TOKENS_PER_MESSAGE + REPLY_PRIMER_TOKENS : 0;
    const media = request.images * this.options.imageTokens + request.audios * this.options.audioTokens;
    const counted = request.sample !== undefined ? this.sampled(narrowSample(request.sample, sampleCost(threshold)), threshold) : this.countUpTo(text, threshold);
    return plus(counted, request.tokenIds + request.estimatedTokens + media + template);
  }

  private countUpTo(text: string, threshold: number): number | Promise<number> {
    if (text.length === 0) return 0;
    if (this.tokenizer === null || threshold === 0) return approximateTokens(text);
    // Never costs less than its length: a text that long needs no measuring to be sampled.
    if (text.length > threshold) return this.sampled(samplePrompt(text, sampleCost(threshold)), threshold);
    const size = sizeOf(text);
    if (countingCost(size) > threshold) return this.sampled(samplePrompt(text, sampleCost(threshold), size), threshold);
    return this.exact(this.tokenizer, text);
  }

  private sampled(sample: PromptSample, threshold: number): number | Promise<number> {
    const tokenizer = this.tokenizer;
    if (tokenizer === null || threshold === 0) return sample.estimate;
    const counts = sample.windows.map((window) => this.exact(tokenizer, window));
    const total = (values: readonly number[]): number => extrapolate(sample, values.reduce((sum, value) => sum + value, 0));
    return counts.every((count) => typeof count === "number") ? total(counts as number[]) : Promise.all(counts).then(total);
  }

  private exact(tokenizer: AsyncTextTokenizer, text: string): number | Promise<number> {
    let estimated = 0;
    const rest = text.replace(LONG_RUN, (run) => {
      estimated += approximateTokens(run);
      return " ";
    });
    return plus(tokenizer.count(rest), estimated);
  }
}

/** As much as a text counted whole at the threshold (set by each tokenizer's speed): no prompt costs more. */
function sampleCost(threshold: number): number {
  return Math.min(SAMPLE_COST, threshold);
}

/** Generated text is counted with o200k as it streams; bounded like a prompt, since an engine may send one huge delta. */
const outputCounter = new TokenCounter({ countWholeUpTo: 4096, imageTokens: 0, audioTokens: 0 });

/** The tokens of a stretch of generated text (o200k; the engine's `usage` settles the count). */
export function outputTokens(text: string): number {
  const tokens = outputCounter.count(text);
  return typeof tokens === "number" ? tokens : approximateTokens(text);
}
