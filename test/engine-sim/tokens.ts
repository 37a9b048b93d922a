import { createHash } from "node:crypto";
import { encode } from "gpt-tokenizer/encoding/o200k_base";

/**
 * Special-token markers such as `<|endoftext|>` inside user text are counted as plain text, the
 * way an OpenAI-compatible server treats user content; gpt-tokenizer would otherwise throw.
 */
const PLAIN_TEXT = { disallowedSpecial: new Set<string>() };

/** o200k token ids of a piece of prompt text. */
export function textTokens(text: string): number[] {
  return encode(text, PLAIN_TEXT);
}

/**
 * The chained hash of each full block of `tokens`, as vLLM's prefix cache names its blocks: a
 * block's hash covers its own tokens and its parent's hash, so equal hashes mean equal prefixes.
 * 96 bits of SHA-256: no collision in any run, and short keys in the cache's index.
 */
export function blockHashes(tokens: readonly number[], blockSize: number): string[] {
  const hashes: string[] = [];
  let parent = "";
  for (let end = blockSize; end <= tokens.length; end += blockSize) {
    parent = createHash("sha256").update(parent).update(Uint32Array.from(tokens.slice(end - blockSize, end))).digest("base64").slice(0, 16);
    hashes.push(parent);
  }
  return hashes;
}

/**
 * The generated "answer". Every word is exactly one o200k token and starts with a space, so any
 * concatenation re-tokenizes to exactly as many tokens as `usage.completion_tokens` reports.
 */
const WORDS: readonly string[] = [
  " the", " engine", " is", " streaming", " a", " simulated", " answer", " one",
  " token", " at", " time", " so", " that", " every", " load", " counter",
  " can", " be", " checked", " end", " to", " and", " back", " again",
];

/** Text of the generated token at position `step` (0-based); deterministic. */
export function generatedToken(step: number): string {
  return WORDS[step % WORDS.length];
}

/** The whole text of `count` generated tokens, as a non-streaming response carries it. */
export function generatedText(count: number): string {
  let text = "";
  for (let step = 0; step < count; step++) text += generatedToken(step);
  return text;
}
