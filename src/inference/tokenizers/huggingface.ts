import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { TokenizerFileError } from "./file-error.js";
import type { TextTokenizer } from "./o200k.js";

/** The file's JSON object; `fallback` when the file does not exist and one is given. */
async function readJson(file: string, fallback?: object): Promise<object> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    if (fallback !== undefined && (error as NodeJS.ErrnoException).code === "ENOENT") return fallback;
    throw new TokenizerFileError(`tokenizer file ${file} cannot be read: ${(error as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new TokenizerFileError(`tokenizer file ${file} is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new TokenizerFileError(`tokenizer file ${file} is not a JSON object`);
  return value;
}

/**
 * Loads a Hugging Face `tokenizer.json` from disk, never from the hub. The library also reads the
 * model's `tokenizer_config.json` (added-token and clean-up flags); it is taken from beside the
 * file when present, since some models ship without one. Loading and counting hold the thread
 * for long: the sidecar runs this in a worker thread (worker.ts).
 */
export async function loadHuggingFaceTokenizer(file: string): Promise<TextTokenizer> {
  const [json, config] = await Promise.all([readJson(file), readJson(join(dirname(file), "tokenizer_config.json"), {})]);
  let tokenizer: Tokenizer;
  try {
    tokenizer = new Tokenizer(json, config);
    tokenizer.encode("warm up");
  } catch (error) {
    throw new TokenizerFileError(`tokenizer file ${file} is not a usable Hugging Face tokenizer: ${(error as Error).message}`);
  }
  // Special tokens are left out: the chat template's overhead is priced per message by TokenCounter.
  return { count: (text) => tokenizer.encode(text, { add_special_tokens: false }).ids.length };
}
