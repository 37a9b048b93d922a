import { countTokens } from "gpt-tokenizer/encoding/o200k_base";

/**
 * Special-token markers such as `<|endoftext|>` inside user text are counted as plain text, the
 * way an OpenAI-compatible server treats user content; gpt-tokenizer would otherwise throw.
 */
const PLAIN_TEXT = { disallowedSpecial: new Set<string>() };

/** o200k token count of a piece of prompt text. */
export function countTextTokens(text: string): number {
  return countTokens(text, PLAIN_TEXT);
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
