import { describe, expect, it } from "vitest";
import { parseInferenceRequest } from "../../src/inference/apis/index.js";

const body = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));

describe("parseInferenceRequest", () => {
  it("reads model, stream and message texts of a chat request", () => {
    const result = parseInferenceRequest(
      "/v1/chat/completions?x=1",
      body({
        model: "llama",
        stream: true,
        messages: [
          { role: "system", content: "be brief" },
          { role: "user", content: [{ type: "text", text: "hello" }, { type: "image_url", image_url: { url: "u" } }] },
          { role: "assistant", content: null },
        ],
      }),
    );
    expect(result).toEqual({
      ok: true,
      request: {
        model: "llama",
        stream: true,
        asksUsage: false,
        texts: ["be brief", "hello"],
        tokenIds: 0,
        estimatedTokens: 0,
        messages: 3,
        images: 1,
        audios: 0,
      },
    });
  });

  it("builds a body asking for usage, when asked to, only for streaming chat/completions requests that lack it", () => {
    const parse = (path: string, value: unknown, includeUsage = true) => {
      const result = parseInferenceRequest(path, body(value), includeUsage);
      if (!result.ok) throw new Error(result.message);
      return result.request.withUsageBody;
    };
    expect(parse("/v1/chat/completions", { model: "m", stream: true, messages: [] }, false)).toBeUndefined();
    const withUsage = parse("/v1/chat/completions", { model: "m", stream: true, stream_options: { extra: 1 }, messages: [] });
    expect(JSON.parse(withUsage!.toString())).toEqual({
      model: "m",
      stream: true,
      stream_options: { extra: 1, include_usage: true },
      messages: [],
    });
    expect(parse("/v1/completions", { model: "m", stream: true, prompt: "x" })).toBeInstanceOf(Buffer);
    // Without stream_options, the body's own bytes go on unchanged around the option: an integer
    // beyond 2^53, spacing and key order too.
    const sent = ' \n{ "model": "m", "seed": 12345678901234567890123, "stream": true,\n  "messages": [] }';
    const spliced = parseInferenceRequest("/v1/chat/completions", Buffer.from(sent), true);
    if (!spliced.ok) throw new Error(spliced.message);
    expect(spliced.request.withUsageBody?.toString()).toBe(' \n{"stream_options":{"include_usage":true}, "model": "m", "seed": 12345678901234567890123, "stream": true,\n  "messages": [] }');
    // A byte-order mark (which the JSON reader takes off) is not a brace: that body is written back whole.
    const marked = parseInferenceRequest("/v1/chat/completions", Buffer.from(`\ufeff${sent}`), true);
    if (!marked.ok) throw new Error(marked.message);
    expect(JSON.parse(marked.request.withUsageBody!.toString())).toEqual({ ...JSON.parse(sent), stream_options: { include_usage: true } });
    expect(parse("/v1/chat/completions", { model: "m", stream: true, stream_options: { include_usage: true }, messages: [] })).toBeUndefined();
    expect(parse("/v1/chat/completions", { model: "m", messages: [] })).toBeUndefined();
    // Asking for usage itself: the engine's counts will come, whatever the sidecar would add.
    const asks = (path: string, value: unknown) => {
      const result = parseInferenceRequest(path, body(value), false);
      if (!result.ok) throw new Error(result.message);
      return result.request.asksUsage;
    };
    expect(asks("/v1/chat/completions", { model: "m", stream: true, stream_options: { include_usage: true }, messages: [] })).toBe(true);
    expect(asks("/v1/completions", { model: "m", stream: true, stream_options: { include_usage: true }, prompt: "x" })).toBe(true);
    expect(asks("/v1/chat/completions", { model: "m", stream: false, stream_options: { include_usage: true }, messages: [] })).toBe(false);
    expect(asks("/v1/chat/completions", { model: "m", stream: true, stream_options: { include_usage: false }, messages: [] })).toBe(false);
    expect(asks("/v1/responses", { model: "m", stream: true, stream_options: { include_usage: true }, input: "x" })).toBe(false);
    expect(parse("/v1/embeddings", { model: "m", stream: true, input: "x" })).toBeUndefined();
  });

  it("reads every completions prompt form, counting token ids exactly", () => {
    const parse = (prompt: unknown) => parseInferenceRequest("/v1/completions", body({ model: "m", prompt }));
    expect(parse("once upon")).toMatchObject({ ok: true, request: { texts: ["once upon"], tokenIds: 0 } });
    expect(parse(["a", "b"])).toMatchObject({ ok: true, request: { texts: ["a", "b"] } });
    expect(parse([1, 2, 3])).toMatchObject({ ok: true, request: { tokenIds: 3 } });
    expect(parse([[1, 2], [3]])).toMatchObject({ ok: true, request: { tokenIds: 3 } });
    expect(parse([{}])).toEqual({ ok: false, message: "'prompt[0]' must be a string, a token id or an array of token ids" });
  });

  it("names what is wrong with a bad chat body", () => {
    const chat = (value: Buffer | undefined) => parseInferenceRequest("/v1/chat/completions", value);
    expect(chat(Buffer.from('{"model": "m", "messages": ['))).toMatchObject({ ok: false, message: expect.stringMatching(/not valid JSON/) });
    expect(chat(body({ messages: [] }))).toEqual({ ok: false, message: "request has no 'model'" });
    expect(chat(body({ model: 7, messages: [] }))).toEqual({ ok: false, message: "'model' must be a non-empty string" });
    expect(chat(body({ model: "m", messages: "hi" }))).toEqual({ ok: false, message: "'messages' must be an array" });
    expect(chat(body({ model: "m", messages: [{ content: 5 }] }))).toEqual({
      ok: false,
      message: "'messages[0].content' must be a string, an array of content parts or null",
    });
    expect(chat(body([1]))).toEqual({ ok: false, message: "request body must be a JSON object" });
    expect(chat(undefined)).toEqual({ ok: false, message: "/v1/chat/completions needs a JSON body" });
  });

  it("routes other paths by their model when they have one, with no prompt", () => {
    expect(parseInferenceRequest("/v1/rerank", body({ model: "e5", query: "x" }))).toMatchObject({
      ok: true,
      request: { model: "e5", texts: [], tokenIds: 0 },
    });
    expect(parseInferenceRequest("/v1/models", undefined)).toMatchObject({ ok: true, request: { model: undefined } });
    expect(parseInferenceRequest("/upload", Buffer.from("not json"))).toMatchObject({ ok: true, request: { model: undefined } });
  });

  it("reads paths named like what every object inherits as any other path (found by the fuzzer)", () => {
    for (const path of ["__proto__", "/__proto__", "constructor", "/toString", "/v1/__proto__"]) {
      expect(parseInferenceRequest(path, body({ model: "m" }))).toMatchObject({ ok: true, request: { model: "m", texts: [] } });
    }
  });

  it("reads every chat role, content parts, tool definitions and assistant tool calls", () => {
    const tool = { type: "function", function: { name: "weather", parameters: { type: "object", properties: { city: { type: "string" } } } } };
    const result = parseInferenceRequest(
      "/v1/chat/completions",
      body({
        model: "m",
        tools: [tool],
        messages: [
          { role: "developer", content: "dev" },
          { role: "system", content: [{ type: "text", text: "sys" }] },
          {
            role: "user",
            content: [
              { type: "text", text: "look" },
              { type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } },
              { type: "input_audio", input_audio: { data: "AAAA", format: "wav" } },
            ],
          },
          { role: "assistant", content: null, tool_calls: [{ id: "c1", type: "function", function: { name: "weather", arguments: '{"city":"Paris"}' } }] },
          { role: "tool", tool_call_id: "c1", content: "sunny" },
        ],
      }),
    );
    expect(result).toEqual({
      ok: true,
      request: {
        model: "m",
        stream: false,
        asksUsage: false,
        texts: ["dev", "sys", "look", "weather", '{"city":"Paris"}', "sunny", JSON.stringify(tool)],
        tokenIds: 0,
        estimatedTokens: 0,
        messages: 5,
        images: 1,
        audios: 1,
      },
    });
  });

  it("names the field of a wrongly typed chat part", () => {
    const chat = (messages: unknown, extra: object = {}) => parseInferenceRequest("/v1/chat/completions", body({ model: "m", messages, ...extra }));
    expect(chat([{ role: "user", content: "a" }, { role: "user", content: "b" }, { role: "user", content: 3 }])).toEqual({
      ok: false,
      message: "'messages[2].content' must be a string, an array of content parts or null",
    });
    expect(chat([{ role: "user", content: [{ type: "text", text: 1 }] }])).toEqual({ ok: false, message: "'messages[0].content[0].text' must be a string" });
    expect(chat([{ role: "user", content: ["x"] }])).toEqual({ ok: false, message: "'messages[0].content[0]' must be an object" });
    expect(chat([{ role: 1, content: "x" }])).toEqual({ ok: false, message: "'messages[0].role' must be a string" });
    expect(chat([{ role: "assistant", tool_calls: {} }])).toEqual({ ok: false, message: "'messages[0].tool_calls' must be an array" });
    expect(chat([{ role: "assistant", tool_calls: [{ id: "x" }] }])).toEqual({
      ok: false,
      message: "'messages[0].tool_calls[0]' must be an object with a 'function'",
    });
    expect(chat([], { tools: {} })).toEqual({ ok: false, message: "'tools' must be an array" });
  });

  it("reads embeddings input in all four forms, token ids exactly", () => {
    const embed = (input: unknown) => parseInferenceRequest("/v1/embeddings", body({ model: "e5", input }));
    expect(embed("x")).toMatchObject({ ok: true, request: { model: "e5", texts: ["x"], tokenIds: 0, messages: 0 } });
    expect(embed(["a", "b"])).toMatchObject({ ok: true, request: { texts: ["a", "b"] } });
    expect(embed([5, 6])).toMatchObject({ ok: true, request: { tokenIds: 2 } });
    expect(embed([[5, 6], [7]])).toMatchObject({ ok: true, request: { tokenIds: 3 } });
    expect(embed(7)).toEqual({ ok: false, message: "'input' must be a string or an array" });
    expect(embed([true])).toEqual({ ok: false, message: "'input[0]' must be a string, a token id or an array of token ids" });
  });

  it("reads Responses API input (string or items) and instructions", () => {
    const responses = (value: object) => parseInferenceRequest("/v1/responses", body({ model: "m", ...value }));
    expect(responses({ input: "hi", instructions: "be brief" })).toMatchObject({ ok: true, request: { texts: ["be brief", "hi"], messages: 2 } });
    expect(
      responses({
        input: [
          { role: "user", content: [{ type: "input_text", text: "what" }, { type: "input_image", image_url: "u" }] },
          { type: "function_call", call_id: "c", name: "f", arguments: "{}" },
          { type: "function_call_output", call_id: "c", output: "42" },
        ],
      }),
    ).toMatchObject({ ok: true, request: { texts: ["what", "f", "{}", "42"], messages: 3, images: 1 } });
    expect(responses({ input: 3 })).toEqual({ ok: false, message: "'input' must be a string or an array of items" });
    expect(responses({ input: "x", instructions: 3 })).toEqual({ ok: false, message: "'instructions' must be a string" });
    expect(responses({ input: [{ content: 3 }] })).toEqual({
      ok: false,
      message: "'input[0].content' must be a string, an array of content parts or null",
    });
  });

  it("refuses a body that is not UTF-8, naming it", () => {
    const bad = Buffer.concat([Buffer.from('{"model": "m", "prompt": "'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]);
    expect(parseInferenceRequest("/v1/completions", bad)).toEqual({ ok: false, message: "request body is not valid UTF-8" });
    // A split character is invalid too: lenient decoding would count U+FFFD instead.
    expect(parseInferenceRequest("/v1/completions", Buffer.from([0xe4, 0xb8]))).toEqual({ ok: false, message: "request body is not valid UTF-8" });
  });

  it("survives JSON nested hundreds of thousands deep", () => {
    const depth = 200_000;
    const deepArray = `{"model": "m", "prompt": ${"[".repeat(depth)}${"]".repeat(depth)}}`;
    expect(parseInferenceRequest("/v1/completions", Buffer.from(deepArray))).toEqual({
      ok: false,
      message: "'prompt[0]' must be a string, a token id or an array of token ids",
    });
    const deepTool = `{"model": "m", "messages": [], "tools": [${'{"a":'.repeat(depth)}1${"}".repeat(depth)}]}`;
    expect(parseInferenceRequest("/v1/chat/completions", Buffer.from(deepTool))).toEqual({ ok: false, message: "'tools[0]' is nested too deeply" });
  });
});
