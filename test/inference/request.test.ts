import { describe, expect, it } from "vitest";
import { parseInferenceRequest } from "../../src/inference/request.js";

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
    expect(result).toEqual({ ok: true, request: { model: "llama", stream: true, texts: ["be brief", "hello"], tokenIds: 0, messages: 3 } });
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
    expect(parseInferenceRequest("/v1/embeddings", body({ model: "e5", input: "x" }))).toMatchObject({
      ok: true,
      request: { model: "e5", texts: [] },
    });
    expect(parseInferenceRequest("/v1/models", undefined)).toMatchObject({ ok: true, request: { model: undefined } });
    expect(parseInferenceRequest("/upload", Buffer.from("not json"))).toMatchObject({ ok: true, request: { model: undefined } });
  });
});
