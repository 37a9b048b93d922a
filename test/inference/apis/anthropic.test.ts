import fc from "fast-check";
import { countTokens } from "gpt-tokenizer/encoding/o200k_base";
import { afterEach, describe, expect, it } from "vitest";
import { anthropic } from "../../../src/inference/apis/anthropic/index.js";
import { apiRoute, parseInferenceRequest } from "../../../src/inference/apis/index.js";
import { openAi } from "../../../src/inference/apis/openai/index.js";
import type { Refusal } from "../../../src/inference/refusal.js";
import { RequestParser } from "../../../src/inference/request-parser.js";
import type { ParseResult } from "../../../src/inference/request.js";
import { MAX_TOKENS_PER_REQUEST, type ResponseProgress } from "../../../src/inference/response.js";
import { outputTokens, TokenCounter } from "../../../src/inference/tokens.js";

const body = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));
const messages = (value: Record<string, unknown>): ParseResult => parseInferenceRequest("/v1/messages", body({ model: "claude", max_tokens: 64, ...value }));
const parsed = (value: Record<string, unknown>) => {
  const result = messages(value);
  if (!result.ok) throw new Error(`expected a parse: ${result.message}`);
  return result.request;
};

describe("choosing the adapter", () => {
  it("/v1/messages however it is written goes to the Anthropic adapter; every other path to the OpenAI one", () => {
    for (const target of ["/v1/messages", "/v1/messages/", "//v1/%6Dessages?beta=true", "/v1//messages#x"]) expect(apiRoute(target)).toEqual({ api: anthropic, path: "/v1/messages" });
    for (const target of ["/v1/chat/completions", "/v1/messages/count_tokens", "/v1/models", "/messages", "/"]) expect(apiRoute(target).api).toBe(openAi);
  });
});

describe("Anthropic request parsing", () => {
  it("reads model and stream, and the prompt in the model's order: tools, system, messages", () => {
    const tool = { name: "get_weather", description: "Weather for a city", input_schema: { type: "object", properties: { city: { type: "string" } } } };
    const request = parsed({
      stream: true,
      tools: [tool],
      system: "You are terse.",
      messages: [
        { role: "user", content: "Weather in Paris?" },
        { role: "assistant", content: [{ type: "text", text: "Checking." }] },
      ],
    });
    expect(request).toMatchObject({ model: "claude", stream: true, messages: 3, images: 0, audios: 0, tokenIds: 0, estimatedTokens: 0 });
    expect(request.texts).toEqual([JSON.stringify(tool), "You are terse.", "Weather in Paris?", "Checking."]);
    expect(request.withUsageBody).toBeUndefined();
  });

  it("reads every content block kind: text, image, document, tool use, tool result, thinking", () => {
    const request = parsed({
      system: [{ type: "text", text: "Be exact.", cache_control: { type: "ephemeral" } }],
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "Look:" },
            { type: "image", source: { type: "base64", media_type: "image/png", data: "iVBORw0KGgo=" } },
            { type: "image", source: { type: "url", url: "https://example.com/cat.png" } },
            { type: "document", title: "Notes", context: "from the meeting", source: { type: "text", media_type: "text/plain", data: "Ship on Friday." } },
            { type: "document", source: { type: "content", content: [{ type: "text", text: "Part one." }, { type: "image", source: { type: "url", url: "u" } }] } },
            { type: "document", source: { type: "base64", media_type: "application/pdf", data: "JVBERi0=" } },
          ],
        },
        {
          role: "assistant",
          content: [
            { type: "thinking", thinking: "They want the weather.", signature: "sig" },
            { type: "redacted_thinking", data: "c2VjcmV0" },
            { type: "tool_use", id: "toolu_1", name: "get_weather", input: { city: "Paris" } },
          ],
        },
        {
          role: "user",
          content: [
            { type: "tool_result", tool_use_id: "toolu_1", content: "18 °C" },
            { type: "tool_result", tool_use_id: "toolu_2", content: [{ type: "text", text: "sunny" }, { type: "image", source: { type: "url", url: "v" } }] },
            { type: "tool_result", tool_use_id: "toolu_3", is_error: true },
            { type: "search_result", source: "https://example.com", title: "Forecast", content: [{ type: "text", text: "Rain later." }] },
          ],
        },
      ],
    });
    expect(request.texts).toEqual([
      "Be exact.",
      "Look:",
      "Notes",
      "from the meeting",
      "Ship on Friday.",
      "Part one.",
      "They want the weather.",
      "get_weather",
      '{"city":"Paris"}',
      "18 °C",
      "sunny",
      "Forecast",
      "Rain later.",
    ]);
    // Two images, one inside a document, one inside a tool result; the PDF priced as one page's image.
    expect(request.images).toBe(5);
    expect(request.messages).toBe(4);
  });

  it("prices the prompt with the pool's tokenizer as the OpenAI path does: texts, images, per-message overhead", () => {
    const counter = new TokenCounter({ countWholeUpTo: 65_536, imageTokens: 765, audioTokens: 200 });
    const request = parsed({ system: "Be brief.", messages: [{ role: "user", content: [{ type: "text", text: "Describe this." }, { type: "image", source: { type: "url", url: "u" } }] }] });
    expect(counter.promptTokens(request)).toBe(countTokens("Be brief.\nDescribe this.") + 765 + 2 * 3 + 3);
  });

  it("refuses bad input with a message naming the field", () => {
    const cases: [Buffer | undefined, string][] = [
      [undefined, "/v1/messages needs a JSON body"],
      [Buffer.from("{"), "request body is not valid JSON"],
      [Buffer.from([0x7b, 0xff, 0x7d]), "request body is not valid UTF-8"],
      [body([1]), "request body must be a JSON object"],
      [body({ messages: [] }), "request has no 'model'"],
      [body({ model: "", messages: [] }), "'model' must be a non-empty string"],
      [body({ model: "m" }), "'messages' must be an array"],
      [body({ model: "m", messages: ["hi"] }), "'messages[0]' must be an object"],
      [body({ model: "m", messages: [{ role: 1, content: "x" }] }), "'messages[0].role' must be a string"],
      [body({ model: "m", messages: [{ role: "user" }] }), "'messages[0].content' must be a string or an array of content blocks"],
      [body({ model: "m", messages: [{ role: "user", content: [{ text: "x" }] }] }), "'messages[0].content[0].type' must be a string"],
      [body({ model: "m", messages: [{ role: "user", content: [{ type: "text", text: 3 }] }] }), "'messages[0].content[0].text' must be a string"],
      [body({ model: "m", messages: [{ role: "assistant", content: [{ type: "tool_use", name: 7, input: {} }] }] }), "'messages[0].content[0].name' must be a string"],
      [body({ model: "m", messages: [{ role: "user", content: [{ type: "tool_result", content: 5 }] }] }), "'messages[0].content[0].content' must be a string or an array of content blocks"],
      [body({ model: "m", messages: [{ role: "user", content: [{ type: "tool_result", content: [null] }] }] }), "'messages[0].content[0].content[0]' must be an object"],
      [body({ model: "m", messages: [{ role: "user", content: [{ type: "document" }] }] }), "'messages[0].content[0].source' must be an object"],
      [body({ model: "m", messages: [{ role: "user", content: [{ type: "document", source: { type: "text", data: 1 } }] }] }), "'messages[0].content[0].source.data' must be a string"],
      [body({ model: "m", messages: [{ role: "assistant", content: [{ type: "thinking", thinking: {} }] }] }), "'messages[0].content[0].thinking' must be a string"],
      [body({ model: "m", system: 4, messages: [] }), "'system' must be a string or an array of text blocks"],
      [body({ model: "m", system: [{ type: "text" , text: false }], messages: [] }), "'system[0].text' must be a string"],
      [body({ model: "m", tools: {}, messages: [] }), "'tools' must be an array"],
      [body({ model: "m", tools: ["t"], messages: [] }), "'tools[0]' must be an object"],
    ];
    for (const [value, message] of cases) {
      const result = parseInferenceRequest("/v1/messages", value);
      expect(result.ok, message).toBe(false);
      if (!result.ok) expect(result.message).toContain(message);
    }
  });

  it("a tool input nested deeper than the stack allows is refused, not thrown", () => {
    const deep = `{"model":"m","messages":[{"role":"assistant","content":[{"type":"tool_use","name":"f","input":${"[".repeat(200_000)}${"]".repeat(200_000)}}]}]}`;
    expect(parseInferenceRequest("/v1/messages", Buffer.from(deep))).toEqual({ ok: false, message: "'messages[0].content[0].input' is nested too deeply" });
  });

  it("blocks inside a tool result do not nest further: a deep chain of tool results parses without recursion", () => {
    const depth = 50_000;
    const content = `${'[{"type":"tool_result","content":'.repeat(depth)}"leaf"${"}]".repeat(depth)}`;
    const result = parseInferenceRequest("/v1/messages", Buffer.from(`{"model":"m","messages":[{"role":"user","content":${content}}]}`));
    // Only the first level is read as a tool result; what it holds is a block of another kind, counted by its `text` (none).
    expect(result).toMatchObject({ ok: true, request: { texts: [], messages: 1 } });
  });

  it("never adds stream_options, even when the sidecar forces usage on the OpenAI path", () => {
    const result = parseInferenceRequest("/v1/messages", body({ model: "m", stream: true, messages: [{ role: "user", content: "hi" }] }), true);
    expect(result.ok && result.request.withUsageBody).toBe(undefined);
  });
});

describe("Anthropic request parsing off the event loop", () => {
  let parser: RequestParser | undefined;
  afterEach(() => parser?.close());

  it("a large Messages body parses on the thread with the Anthropic adapter, to the same request as inline", async () => {
    parser = new RequestParser({ offThreadAboveBytes: 1024, wholeUpToCost: () => Number.MAX_SAFE_INTEGER, includeUsage: true, lost: (error) => { throw error; } });
    const turns = Array.from({ length: 200 }, (_, i) => ({ role: i % 2 === 0 ? "user" : "assistant", content: [{ type: "text", text: `turn ${i} of a long talk about harbours` }] }));
    const large = body({ model: "claude", system: "Be kind.", stream: true, messages: turns });
    const inline = parseInferenceRequest("/v1/messages", large, true);
    const threaded = parser.parse(apiRoute("/v1/messages"), large);
    expect(threaded).toBeInstanceOf(Promise);
    const result = await threaded;
    expect(result).toEqual(inline);
    expect(result.ok && result.request.messages).toBe(201);
    // Refusals from the thread speak for the same adapter.
    expect(await parser.parse(apiRoute("/v1/messages"), Buffer.concat([large, Buffer.from("x")]))).toMatchObject({ ok: false, message: expect.stringContaining("not valid JSON") });
  });
});

/** One SSE event as Anthropic sends it: its name and the same name as `type` in the data. */
const event = (data: { type: string } & Record<string, unknown>): string => `event: ${data.type}\ndata: ${JSON.stringify(data)}\n\n`;

const messageStart = (usage: Record<string, unknown>) =>
  event({ type: "message_start", message: { id: "msg_1", type: "message", role: "assistant", content: [], model: "claude", stop_reason: null, usage } });

/** A stream with every event kind: text, a tool call with streamed input, thinking, pings; usage at the start and the end. */
const streamEvents = [
  messageStart({ input_tokens: 25, cache_creation_input_tokens: 10, cache_read_input_tokens: 100, output_tokens: 1 }),
  event({ type: "content_block_start", index: 0, content_block: { type: "thinking", thinking: "" } }),
  event({ type: "ping" }),
  event({ type: "content_block_delta", index: 0, delta: { type: "thinking_delta", thinking: "Weather, so a tool." } }),
  event({ type: "content_block_delta", index: 0, delta: { type: "signature_delta", signature: "EqQBCg==" } }),
  event({ type: "content_block_stop", index: 0 }),
  event({ type: "content_block_start", index: 1, content_block: { type: "text", text: "" } }),
  event({ type: "content_block_delta", index: 1, delta: { type: "text_delta", text: "Héllo 世界" } }),
  event({ type: "content_block_stop", index: 1 }),
  event({ type: "content_block_start", index: 2, content_block: { type: "tool_use", id: "toolu_1", name: "get_weather", input: {} } }),
  event({ type: "content_block_delta", index: 2, delta: { type: "input_json_delta", partial_json: "" } }),
  event({ type: "content_block_delta", index: 2, delta: { type: "input_json_delta", partial_json: '{"city": "Paris"}' } }),
  event({ type: "content_block_stop", index: 2 }),
  event({ type: "message_delta", delta: { stop_reason: "tool_use", stop_sequence: null }, usage: { output_tokens: 42 } }),
  event({ type: "message_stop" }),
];
const stream = Buffer.from(streamEvents.join(""));
const streamed = countTokens("Weather, so a tool.") + countTokens("Héllo 世界") + countTokens("get_weather") + 1 + countTokens('{"city": "Paris"}');
const finalUsage = { promptTokens: 135, completionTokens: 42, cachedTokens: 100 };

/** Every stretch's progress, and their sum. */
function scan(chunks: Buffer[]): { total: ResponseProgress; stretches: ResponseProgress[] } {
  const scanner = anthropic.scanner("text/event-stream", 1 << 20, outputTokens);
  const stretches = [...chunks.map((chunk) => scanner.push(chunk)), scanner.end()];
  const total: ResponseProgress = { generated: 0 };
  for (const progress of stretches) {
    total.generated += progress.generated;
    if (progress.firstToken) total.firstToken = progress.firstToken;
    if (progress.usage) total.usage = progress.usage;
    if (progress.error) total.error = progress.error;
    if (progress.rejectedUsage) total.rejectedUsage = progress.rejectedUsage;
  }
  return { total, stretches };
}

describe("Anthropic response scanning", () => {
  it("counts the output of every delta, reads usage from message_start and message_delta (cache tokens are prompt)", () => {
    expect(scan([stream]).total).toEqual({ generated: streamed, firstToken: "event", usage: finalUsage });
  });

  it("the first token is the first content_block_delta: not message_start, a block's empty start, nor a ping", () => {
    const head = streamEvents.slice(0, 3).join("");
    const { stretches } = scan([Buffer.from(head), Buffer.from(streamEvents[3]!), Buffer.from(streamEvents.slice(4).join(""))]);
    // message_start already reconciles the prompt (135 with cache tokens) and its one output token.
    expect(stretches[0]).toEqual({ generated: 0, usage: { promptTokens: 135, completionTokens: 1, cachedTokens: 100 } });
    expect(stretches[1]).toEqual({ generated: countTokens("Weather, so a tool."), firstToken: "event" });
    expect(stretches[2]?.firstToken).toBeUndefined();
  });

  it("a delta with no text to count (a signature) still is the first token; a tool call's name at its start is output", () => {
    const signature = scan([Buffer.from(messageStart({ input_tokens: 3, output_tokens: 0 }) + event({ type: "content_block_delta", index: 0, delta: { type: "signature_delta", signature: "x" } }))]);
    expect(signature.total).toEqual({ generated: 0, firstToken: "event", usage: { promptTokens: 3, completionTokens: 0 } });
    const tool = scan([Buffer.from(event({ type: "content_block_start", index: 0, content_block: { type: "tool_use", id: "t", name: "lookup", input: {} } }))]);
    expect(tool.total).toEqual({ generated: countTokens("lookup"), firstToken: "event" });
  });

  it("gives the same answer wherever the stream is split, even inside a UTF-8 character", () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: stream.length - 1 }), { maxLength: 40 }), (cuts) => {
        const points = [0, ...cuts.sort((a, b) => a - b), stream.length];
        const chunks = points.slice(1).map((end, i) => stream.subarray(points[i], end));
        const { total, stretches } = scan(chunks);
        expect(total).toEqual({ generated: streamed, firstToken: "event", usage: finalUsage });
        expect(stretches.filter((progress) => progress.firstToken).length).toBe(1);
      }),
    );
  });

  it("a message_delta restating the prompt's counts takes them; absent or null counts keep what message_start said", () => {
    const restated = Buffer.from(
      messageStart({ input_tokens: 10, output_tokens: 1 }) +
        event({ type: "message_delta", delta: { stop_reason: "end_turn" }, usage: { input_tokens: 12, cache_read_input_tokens: null, output_tokens: 5 } }),
    );
    expect(scan([restated]).total.usage).toEqual({ promptTokens: 12, completionTokens: 5 });
    const deltaOnly = Buffer.from(event({ type: "message_delta", delta: {}, usage: { output_tokens: 5 } }));
    // Without message_start the prompt is unknown: nothing to reconcile.
    expect(scan([deltaOnly]).total.usage).toBeUndefined();
  });

  it("ignores counts that are no sane token counts, from then on", () => {
    const bad = Buffer.from(messageStart({ input_tokens: -1, output_tokens: 1 }) + event({ type: "message_delta", delta: {}, usage: { output_tokens: 5 } }));
    expect(scan([bad]).total).toEqual({ generated: 0, rejectedUsage: "usage.input_tokens -1 is not a whole number of tokens between 0 and 10000000" });
    const sum = Buffer.from(messageStart({ input_tokens: MAX_TOKENS_PER_REQUEST, cache_read_input_tokens: 1, output_tokens: 1 }));
    expect(scan([sum]).total.rejectedUsage).toContain("is more than 10000000");
  });

  it("reports an error event with its message", () => {
    const failed = Buffer.from(event({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Hi" } }) + event({ type: "error", error: { type: "overloaded_error", message: "Overloaded" } }));
    expect(scan([failed]).total).toEqual({ generated: countTokens("Hi"), firstToken: "event", error: "Overloaded" });
    expect(scan([Buffer.from("event: error\ndata: {}\n\n")]).total).toEqual({ generated: 0, error: "error event" });
  });

  it("reads a whole JSON message's usage at its end; its first byte is the first token", () => {
    const scanner = anthropic.scanner("application/json", 1 << 20, outputTokens);
    const message = body({
      id: "msg_1",
      type: "message",
      role: "assistant",
      content: [{ type: "text", text: "Hi!" }],
      stop_reason: "end_turn",
      usage: { input_tokens: 20, cache_creation_input_tokens: 5, cache_read_input_tokens: 0, output_tokens: 4 },
    });
    expect(scanner.push(message.subarray(0, 7))).toEqual({ generated: 0, firstToken: "body" });
    expect(scanner.push(message.subarray(7))).toEqual({ generated: 0 });
    expect(scanner.end()).toEqual({ generated: 0, usage: { promptTokens: 25, completionTokens: 4, cachedTokens: 0 } });
  });

  it("fuzzed: any events, cut at any bytes: never a throw, counts whole and bounded", () => {
    const count = fc.oneof(fc.integer({ min: -5, max: 2 * MAX_TOKENS_PER_REQUEST }), fc.constant(null), fc.double(), fc.string());
    const anyEvent = fc.oneof(
      fc.record({ input_tokens: count, output_tokens: count, cache_read_input_tokens: count }).map((usage) => messageStart(usage)),
      fc.string().map((text) => event({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text } })),
      fc.string().map((partial) => event({ type: "content_block_delta", index: 0, delta: { type: "input_json_delta", partial_json: partial } })),
      fc.record({ output_tokens: count }).map((usage) => event({ type: "message_delta", delta: {}, usage })),
      fc.constantFrom(event({ type: "ping" }), event({ type: "message_stop" }), "event: error\ndata: {}\n\n", ": keep-alive\n\n", "data: [DONE]\n\n"),
      fc.jsonValue().map((value) => `data: ${JSON.stringify(value)}\n\n`),
      fc.string({ unit: "binary", maxLength: 200 }),
    );
    fc.assert(
      fc.property(fc.array(anyEvent, { maxLength: 12 }), fc.array(fc.integer({ min: 1, max: 512 }), { minLength: 1, maxLength: 8 }), (events, cuts) => {
        const bytes = Buffer.from(events.join(""));
        const scanner = anthropic.scanner("text/event-stream", 1 << 16, outputTokens);
        const progress: ResponseProgress[] = [];
        for (let offset = 0, i = 0; offset < bytes.length; i++) {
          const size = cuts[i % cuts.length]!;
          progress.push(scanner.push(bytes.subarray(offset, offset + size)));
          offset += size;
        }
        progress.push(scanner.end());
        for (const { generated, usage } of progress) {
          expect(Number.isInteger(generated) && generated >= 0).toBe(true);
          if (usage === undefined) continue;
          for (const tokens of [usage.promptTokens, usage.completionTokens]) expect(Number.isInteger(tokens) && tokens >= 0 && tokens <= MAX_TOKENS_PER_REQUEST).toBe(true);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe("Anthropic error bodies", () => {
  const refusal = (status: number, code: Refusal["code"]): Refusal => ({ status, code, message: `refused: ${code}` });

  it("writes {type: error, error: {type, message}, request_id} with Anthropic's error type for each refusal", () => {
    const expected: [Refusal, string][] = [
      [refusal(400, "invalid_request"), "invalid_request_error"],
      [refusal(404, "model_not_found"), "not_found_error"],
      [refusal(408, "request_timeout"), "invalid_request_error"],
      [refusal(413, "request_too_large"), "request_too_large"],
      [refusal(429, "rate_limit_exceeded"), "rate_limit_error"],
      [refusal(500, "internal_error"), "api_error"],
      [refusal(503, "no_engine_available"), "overloaded_error"],
      [refusal(503, "overloaded"), "overloaded_error"],
    ];
    for (const [given, type] of expected) {
      expect(JSON.parse(anthropic.errorBody(given, "req-1"))).toEqual({ type: "error", error: { type, message: given.message }, request_id: "req-1" });
    }
    expect(JSON.parse(anthropic.errorBody(refusal(404, "model_not_found"), undefined))).toMatchObject({ request_id: null });
  });

  it("the OpenAI adapter keeps OpenAI's shape", () => {
    expect(JSON.parse(openAi.errorBody(refusal(404, "model_not_found"), "req-1"))).toEqual({
      error: { message: "refused: model_not_found", type: "invalid_request_error", param: null, code: "model_not_found" },
    });
  });
});
