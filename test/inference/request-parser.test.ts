import { countTokens } from "gpt-tokenizer/encoding/o200k_base";
import type { Worker } from "node:worker_threads";
import { afterEach, describe, expect, it } from "vitest";
import { countingCost } from "../../src/inference/estimate.js";
import { SAMPLE_COST } from "../../src/inference/prompt-sample.js";
import { parseInferenceRequest } from "../../src/inference/apis/index.js";
import type { ParseResult } from "../../src/inference/request.js";
import { RequestParser } from "../../src/inference/request-parser.js";
import { TokenCounter } from "../../src/inference/tokens.js";

const options = { countWholeUpTo: 65_536, imageTokens: 765, audioTokens: 200 };
let parser: RequestParser | undefined;
afterEach(() => parser?.close());

const lostThreads: Error[] = [];
afterEach(() => {
  lostThreads.length = 0;
});

function offThread(wholeUpToCost = 65_536, includeUsage = false): RequestParser {
  parser = new RequestParser({ offThreadAboveBytes: 1024, wholeUpToCost: () => wholeUpToCost, includeUsage, lost: (error) => lostThreads.push(error) });
  return parser;
}

/** A chat body of about `bytes`: English turns, then as many Chinese ones, so a sample must see both. */
function chatBody(bytes: number, extra: Record<string, unknown> = {}): Buffer {
  const english = { role: "user", content: "The harbour town woke slowly; fishermen dragged their nets across the wet stones." };
  const chinese = { role: "assistant", content: "清晨的港口慢慢醒来。渔民们把渔网拖过潮湿的石板路，面包师已经忙了两个小时。" };
  const count = Math.ceil(bytes / (JSON.stringify(english).length + Buffer.byteLength(JSON.stringify(chinese))));
  const messages = [...Array.from({ length: count }, () => english), ...Array.from({ length: count }, () => chinese)];
  return Buffer.from(JSON.stringify({ model: "llama", messages, ...extra }));
}

const settled = async (result: ParseResult | Promise<ParseResult>): Promise<ParseResult> => {
  expect(result).toBeInstanceOf(Promise);
  return result;
};

describe("request parsing off the event loop", () => {
  it("a large body parses on the thread to the same request as inline", async () => {
    const body = chatBody(20_000, { stream: true });
    const inline = parseInferenceRequest("/v1/chat/completions", body);
    const threaded = await settled(offThread(Number.MAX_SAFE_INTEGER).parse("/v1/chat/completions", body));
    if (!inline.ok || !threaded.ok) throw new Error("expected both to parse");
    expect(threaded.request).toEqual(inline.request);
    // The body rewrite is built only when asked for.
    expect(threaded.request.withUsageBody).toBeUndefined();
  });

  it("builds the include_usage body on the thread when the option is on", async () => {
    const body = chatBody(20_000, { stream: true });
    const inline = parseInferenceRequest("/v1/chat/completions", body, true);
    const threaded = await settled(offThread(65_536, true).parse("/v1/chat/completions", body));
    if (!inline.ok || !threaded.ok) throw new Error("expected both to parse");
    expect(inline.request.withUsageBody).toBeInstanceOf(Buffer);
    expect(threaded.request.withUsageBody).toEqual(inline.request.withUsageBody);
  });

  it("names what is wrong with a bad large body, as inline", async () => {
    const truncated = chatBody(20_000).subarray(0, 15_000);
    const invalid = Buffer.concat([chatBody(20_000).subarray(0, 2_000), Buffer.from([0xff]), chatBody(20_000).subarray(2_000)]);
    const wrongType = Buffer.from(JSON.stringify({ model: "llama", messages: [{ role: "user", content: 42 }], pad: "x".repeat(5_000) }));
    for (const body of [truncated, invalid, wrongType]) {
      const threaded = await settled(offThread().parse("/v1/chat/completions", body));
      expect(threaded).toEqual(parseInferenceRequest("/v1/chat/completions", body));
      expect(threaded.ok).toBe(false);
    }
  });

  it("a prompt longer than any tokenizer counts whole comes back as a sample, priced as inline and within 3 % of the exact count", async () => {
    const body = chatBody(400_000);
    const threaded = await settled(offThread().parse("/v1/chat/completions", body));
    const inline = parseInferenceRequest("/v1/chat/completions", body);
    if (!inline.ok || !threaded.ok) throw new Error("expected both to parse");
    expect(threaded.request.texts).toEqual([]);
    // Window edges move up to a few characters to fall between words.
    expect(countingCost(threaded.request.sample?.windows.join("") ?? "")).toBeLessThanOrEqual(SAMPLE_COST * 1.1);
    const counter = new TokenCounter(options);
    const price = counter.promptTokens(threaded.request);
    expect(price).toBe(counter.promptTokens(inline.request));
    const text = inline.request.texts.join("\n");
    const exact = countTokens(text) + inline.request.messages * 3 + 3;
    expect(Math.abs((price as number) / exact - 1)).toBeLessThan(0.03);
  });

  it("other streams keep flowing: the event loop turns while a 16 MiB body parses", async () => {
    const body = chatBody(16 << 20);
    let turns = 0;
    let turning = true;
    const turn = (): void => {
      turns += 1;
      if (turning) setImmediate(turn);
    };
    setImmediate(turn);
    const parsing = offThread().parse("/v1/chat/completions", body);
    const result = await settled(parsing);
    turning = false;
    expect(result.ok).toBe(true);
    // Inline, the parse is one synchronous call of ~170 ms: the loop could not turn at all.
    expect(turns).toBeGreaterThan(10);
  });

  it("bodies the thread held when it stopped are parsed inline; the next large body starts a new thread", async () => {
    const body = chatBody(2 << 20);
    const own = offThread();
    const pending = own.parse("/v1/chat/completions", body);
    await own.close();
    const inline = parseInferenceRequest("/v1/chat/completions", body);
    expect(await pending).toEqual(inline);
    const again = await settled(own.parse("/v1/chat/completions", chatBody(20_000)));
    expect(again.ok).toBe(true);
    // Closing is not losing.
    expect(lostThreads).toEqual([]);
  });

  it("a thread that dies is reported; the bodies it held are parsed inline", async () => {
    const body = chatBody(2 << 20);
    const own = offThread();
    const pending = own.parse("/v1/chat/completions", body);
    // Kill the thread from outside, as an out-of-memory or a crash would.
    await (own as unknown as { thread: Worker }).thread.terminate();
    expect(await pending).toEqual(parseInferenceRequest("/v1/chat/completions", body));
    expect(lostThreads.map((error) => error.message)).toEqual([expect.stringContaining("request parsing thread stopped")]);
  });

  it("small bodies parse at once, with no thread", () => {
    const small = Buffer.from(JSON.stringify({ model: "llama", messages: [{ role: "user", content: "hi" }] }));
    const result = offThread().parse("/v1/chat/completions", small);
    expect(result).not.toBeInstanceOf(Promise);
    expect(result).toEqual(parseInferenceRequest("/v1/chat/completions", small));
  });
});
