// npm run bench:tokens — time per MB of the prompt estimate and of o200k on a small corpus, and
// the estimate's error against o200k. o200k is timed in 64 KiB slices, the largest text the
// sidecar tokenizes (tokenizer.approximateAboveChars): one slice is the longest the loop is held.
import { readFileSync } from "node:fs";
import { countTokens } from "gpt-tokenizer/encoding/o200k_base";
import { parseInferenceRequest } from "../../src/inference/request.js";
import { approximateTokens } from "../../src/inference/tokens.js";

const SLICE = 65_536;
const MB = 1 << 20;

function corpusText(name: string): string {
  const raw = readFileSync(new URL(`corpus/${name}`, import.meta.url), "utf8");
  if (!name.endsWith(".json")) return raw;
  const parsed = parseInferenceRequest("/v1/chat/completions", Buffer.from(raw));
  if (!parsed.ok) throw new Error(`${name}: ${parsed.message}`);
  return parsed.request.texts.join("\n");
}

/** Best of a few runs, in ms, of `work` over `text`. */
function time(text: string, work: (text: string) => unknown): number {
  let best = Infinity;
  for (let run = 0; run < 5; run++) {
    const started = performance.now();
    work(text);
    best = Math.min(best, performance.now() - started);
  }
  return best;
}

const o200kInSlices = (text: string): number => {
  let total = 0;
  for (let i = 0; i < text.length; i += SLICE) total += countTokens(text.slice(i, i + SLICE));
  return total;
};

countTokens("warm up");
console.log("corpus           MB/s est  ms/MB est  ms/MB o200k  ms/64KiB o200k  tokens o200k  est/o200k");
for (const name of ["english.txt", "code.ts.txt", "chinese.txt", "chat-tools.json"]) {
  const sample = corpusText(name);
  const text = sample.repeat(Math.ceil(MB / Buffer.byteLength(sample)));
  const mb = Buffer.byteLength(text) / MB;
  const estimateMs = time(text, approximateTokens) / mb;
  const o200kMs = time(text, o200kInSlices) / mb;
  const sliceMs = time(text.slice(0, SLICE), countTokens);
  const exact = countTokens(sample);
  const ratio = approximateTokens(sample) / exact;
  console.log(
    `${name.padEnd(16)} ${(1000 / estimateMs).toFixed(0).padStart(9)}  ${estimateMs.toFixed(2).padStart(9)}  ${o200kMs
      .toFixed(1)
      .padStart(11)}  ${sliceMs.toFixed(1).padStart(14)}  ${String(exact).padStart(12)}  ${ratio.toFixed(2).padStart(9)}`,
  );
}
