import { countTokens } from "gpt-tokenizer/encoding/o200k_base";

/** Counts the tokens of a text exactly, special tokens of the chat template excluded. */
export interface TextTokenizer {
  count(text: string): number;
}

/** The default: GPT-4o's o200k_base, a fair stand-in for the BPE vocabularies of open models. */
export const o200k: TextTokenizer = { count: (text) => countTokens(text) };
