import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { apiPath, parseInferenceRequest } from "../../src/inference/apis/index.js";
import { openAi } from "../../src/inference/apis/openai/index.js";
import { outputTokens } from "../../src/inference/tokens.js";
import { RequestParser } from "../../src/inference/request-parser.js";
import { MAX_TOKENS_PER_REQUEST, type ResponseProgress } from "../../src/inference/response.js";

/** Paths as clients and scanners send them: API paths, their odd spellings, and junk. */
const target = fc.oneof(
  fc.constantFrom("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages", "/v1/models", "/", ""),
  fc.stringMatching(/^[/a-z0-9%?#.\\@:~-]{0,40}$/),
  fc.string({ unit: "binary", maxLength: 40 }),
);

/** JSON nested deeply (arrays and objects); past ~10,000 levels a recursive walk (JSON.stringify) overflows the stack. */
const deepTo = (max: number) =>
  fc.integer({ min: 1_000, max }).chain((depth) =>
    fc.constantFrom(`${"[".repeat(depth)}${"]".repeat(depth)}`, `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`),
  );
const deep = deepTo(120_000);

const value = fc.oneof(
  fc.jsonValue({ maxDepth: 4 }),
  fc.constantFrom(1e308, -1e308, Number.MAX_SAFE_INTEGER + 2, -0, 0.5),
  fc.string(),
);

/** Anthropic content blocks of every kind, any field any value. */
const block = fc.record(
  {
    type: fc.oneof(fc.constantFrom("text", "image", "document", "tool_use", "tool_result", "thinking", "search_result", "redacted_thinking"), value),
    text: value,
    content: fc.oneof(fc.string(), value),
    input: value,
    name: value,
    thinking: value,
    title: value,
    source: fc.oneof(fc.record({ type: fc.constantFrom("text", "content", "base64"), data: value, content: value }), value),
  },
  { requiredKeys: [] },
);

/** Requests that look right, with any field swapped for any value. */
const request = fc.record(
  {
    model: fc.oneof(fc.constant("m"), value),
    stream: fc.oneof(fc.boolean(), value),
    stream_options: fc.oneof(fc.constant({ include_usage: false }), value),
    messages: fc.oneof(
      fc.array(fc.record({ role: fc.oneof(fc.constant("user"), value), content: fc.oneof(fc.string(), fc.array(block, { maxLength: 3 }), value) }), { maxLength: 4 }),
      value,
    ),
    system: fc.oneof(fc.array(block, { maxLength: 2 }), value),
    prompt: value,
    input: value,
    instructions: value,
    tools: fc.oneof(fc.array(value, { maxLength: 3 }), value),
  },
  { requiredKeys: [] },
);

const body = fc.oneof(
  request.map((r) => Buffer.from(JSON.stringify(r))),
  deep.map((text) => Buffer.from(`{"model": "m", "messages": [], "tools": [${text}], "metadata": ${text}}`)),
  deep.map((text) => Buffer.from(`{"model": "m", "messages": [{"role": "user", "content": [{"type": "tool_use", "name": "f", "input": ${text}}, {"type": "tool_result", "content": ${text}}]}]}`)),
  fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes)),
  fc.string({ unit: "binary", maxLength: 300 }).map((text) => Buffer.from(text)),
);

describe("fuzzing the request parser", () => {
  it("any target and any body: an answer, never a throw; a refusal names what is wrong", () => {
    fc.assert(
      fc.property(target, fc.option(body, { nil: undefined }), fc.boolean(), (path, bytes, includeUsage) => {
        const result = parseInferenceRequest(path, bytes, includeUsage);
        if (!result.ok) expect(result.message.length).toBeGreaterThan(0);
        else {
          expect(result.request.tokenIds).toBeGreaterThanOrEqual(0);
          expect(Number.isFinite(result.request.estimatedTokens)).toBe(true);
        }
      }),
      { numRuns: 400 },
    );
  });

  it("apiPath is total: it never throws and always gives a path without query or repeated slashes", () => {
    fc.assert(
      fc.property(target, (path) => {
        const route = apiPath(path);
        expect(route.includes("//")).toBe(false);
        expect(/[?#]/.test(route) && !path.includes("%")).toBe(false);
      }),
      { numRuns: 1000 },
    );
  });

  const parser = new RequestParser({ offThreadAboveBytes: 0, wholeUpToCost: () => 65_536, includeUsage: true, lost: (error) => {
    throw error;
  } });
  afterAll(() => parser.close());

  it("on the parsing thread too: every body answered, the thread never lost", async () => {
    await fc.assert(
      fc.asyncProperty(target, body, async (path, bytes) => {
        const result = await parser.parse(path, bytes);
        expect(typeof result.ok).toBe("boolean");
      }),
      { numRuns: 60 },
    );
  });
});

/** An SSE event stream with events of every kind an engine (or a broken one) sends. */
const sseEvent = fc.oneof(
  fc.string().map((content) => `data: ${JSON.stringify({ choices: [{ delta: { content } }] })}\n\n`),
  fc
    .tuple(value, value)
    .map(([prompt, completion]) => `data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: prompt, completion_tokens: completion } })}\n\n`),
  fc.constantFrom('data: {"usage": {"prompt_tokens": 1e400, "completion_tokens": 1}}\n\n', ": keep-alive\n\n", "data: [DONE]\n\n", "event: error\ndata: {}\n\n"),
  value.map((v) => `data: ${JSON.stringify(v)}\n\n`),
  deepTo(30_000).map((text) => `data: {"error": ${text}}\n\n`),
  fc.string({ unit: "binary", maxLength: 200 }),
);

function checked(progress: ResponseProgress): void {
  expect(Number.isInteger(progress.generated) && progress.generated >= 0).toBe(true);
  if (progress.usage !== undefined) {
    for (const count of [progress.usage.promptTokens, progress.usage.completionTokens]) {
      expect(Number.isInteger(count) && count >= 0 && count <= MAX_TOKENS_PER_REQUEST).toBe(true);
    }
  }
}

describe("fuzzing the response scanner", () => {
  it("any events, cut at any bytes: never a throw, counts always whole and bounded", () => {
    fc.assert(
      fc.property(
        fc.array(sseEvent, { maxLength: 12 }),
        fc.array(fc.integer({ min: 1, max: 2048 }), { minLength: 1, maxLength: 8 }),
        fc.constantFrom("text/event-stream", "application/json", "text/plain", undefined),
        (events, cuts, contentType) => {
          const bytes = Buffer.from(events.join(""));
          const scanner = openAi.scanner(contentType, 1 << 16, outputTokens);
          for (let offset = 0, i = 0; offset < bytes.length; i++) {
            const size = cuts[i % cuts.length]!;
            checked(scanner.push(bytes.subarray(offset, offset + size)));
            offset += size;
          }
          checked(scanner.end());
        },
      ),
      { numRuns: 200 },
    );
  });

  it("an event that never ends is not held without bound, and scanning carries on after it", () => {
    const scanner = openAi.scanner("text/event-stream", 1 << 16, outputTokens);
    const before = process.memoryUsage().heapUsed;
    const line = Buffer.from("data: ".concat("x".repeat(64 * 1024)));
    for (let i = 0; i < 600; i++) checked(scanner.push(line));
    const grown = process.memoryUsage().heapUsed - before;
    // 37.5 MiB fed in one event; the scanner keeps at most its 4 Mi-character cap of it.
    expect(grown).toBeLessThan(24 << 20);
    const after = scanner.push(Buffer.from(`\n\ndata: ${JSON.stringify({ choices: [{ delta: { content: "hello" } }] })}\n\n`));
    expect(after.generated).toBeGreaterThan(0);
  });
});
