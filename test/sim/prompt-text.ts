import { decode, encode } from "gpt-tokenizer/encoding/o200k_base";
import { mulberry32 } from "../support/random.js";
import type { SimRequest } from "./routers.js";
import { BLOCK_TOKENS } from "./workloads.js";

/**
 * o200k's lowercase words with a leading space that are one token each, in rank order (roughly
 * commonest first). Separate pre-tokens never merge, so any run of them is one token a word.
 */
let vocabulary: readonly string[] | undefined;

function words(): readonly string[] {
  if (vocabulary === undefined) {
    const found: string[] = [];
    for (let id = 0; id < 200_000; id++) {
      let text: string;
      try {
        text = decode([id]);
      } catch {
        continue;
      }
      if (/^ [a-z]{2,}$/.test(text) && encode(text).length === 1) found.push(text);
    }
    vocabulary = found;
  }
  return vocabulary;
}

/** FNV-1a: a seed from a block's name. */
function seedOf(name: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) hash = Math.imul(hash ^ name.charCodeAt(i), 0x01000193);
  return hash >>> 0;
}

/** `count` words drawn from the vocabulary by a log-uniform rank, so frequent words recur as in prose (Zipf). */
function wordsFor(name: string, count: number): string {
  const vocabulary = words();
  const random = mulberry32(seedOf(name));
  let text = "";
  for (let i = 0; i < count; i++) text += vocabulary[Math.floor(Math.exp(random() * Math.log(vocabulary.length))) - 1]!;
  return text;
}

/**
 * The text of a simulated request's prompt: exactly `promptTokens` o200k tokens, each full block
 * rendered from its chained name and the rest from the request's id. Blocks named alike read
 * alike, so an engine hashing the text's tokens finds the prefixes the workload shares, and no others.
 */
export function promptText(request: Pick<SimRequest, "id" | "promptTokens" | "blockHashes">): string {
  let text = "";
  for (const name of request.blockHashes) text += wordsFor(name, BLOCK_TOKENS);
  return text + wordsFor(`${request.id}/tail`, request.promptTokens - request.blockHashes.length * BLOCK_TOKENS);
}
