import { countTokens } from "gpt-tokenizer/encoding/o200k_base";

/** Counts the tokens of a text exactly, special tokens of the chat template excluded. */
export interface TextTokenizer {
  count(text: string): number;
}

/** A TextTokenizer that may answer later (one hosted in a worker thread); it never rejects. */
export interface AsyncTextTokenizer {
  count(text: string): number | Promise<number>;
}

// The tables are built and the regexes compiled on first use (~10 ms): pay that at start, not on a request.
countTokens("warm up");

/** The default: GPT-4o's o200k_base, a fair stand-in for the BPE vocabularies of open models. */
export const o200k: TextTokenizer = { count: (text) => countTokens(text) };
