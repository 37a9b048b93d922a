import { countTokens } from "gpt-tokenizer/encoding/o200k_base";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LogCapture } from "../support/sidecar.js";
import { startRig, type Rig } from "./harness.js";

/**
 * Every request shape through the real ext_proc path: the prompt tokens the sidecar reserved
 * are read from its one log line per request.
 */
let rig: Rig;
const capture = new LogCapture();
beforeAll(async () => {
  rig = await startRig({ engines: 1, capture, pools: ([a]) => [{ name: "any", models: ["*"], endpoints: [a!] }] });
});
afterAll(async () => {
  await rig.expectIdle();
  await rig.close();
});

let sequence = 0;
async function reserved(path: string, body: unknown): Promise<number> {
  const requestId = `shape-${(sequence += 1)}`;
  await rig.exchange({
    request: { method: "POST", path, headers: { "content-type": "application/json", "x-request-id": requestId }, body: JSON.stringify(body) },
  });
  await expect.poll(() => capture.lines.some((line) => line["requestId"] === requestId)).toBe(true);
  const line = capture.lines.find((l) => l["requestId"] === requestId)!;
  expect(line["outcome"]).not.toBe("refused");
  return line["promptTokens"] as number;
}

const text = "The quick brown fox jumps over the lazy dog.";

describe("prompt tokens reserved for each request shape", () => {
  it("completions: string, strings, token ids, arrays of token ids", async () => {
    expect(await reserved("/v1/completions", { model: "m", prompt: text })).toBe(countTokens(text));
    expect(await reserved("/v1/completions", { model: "m", prompt: [text, text] })).toBe(countTokens(`${text}\n${text}`));
    expect(await reserved("/v1/completions", { model: "m", prompt: [1, 2, 3, 4] })).toBe(4);
    expect(await reserved("/v1/completions", { model: "m", prompt: [[1, 2], [3, 4, 5]] })).toBe(5);
  });

  it("embeddings: the same four input forms", async () => {
    expect(await reserved("/v1/embeddings", { model: "m", input: text })).toBe(countTokens(text));
    expect(await reserved("/v1/embeddings", { model: "m", input: [text, text] })).toBe(countTokens(`${text}\n${text}`));
    expect(await reserved("/v1/embeddings", { model: "m", input: [7, 8, 9] })).toBe(3);
    expect(await reserved("/v1/embeddings", { model: "m", input: [[7], [8, 9]] })).toBe(3);
  });

  it("chat: the template overhead per message, images and audio by the configured estimate, tools and tool calls", async () => {
    const plain = await reserved("/v1/chat/completions", { model: "m", messages: [{ role: "user", content: text }] });
    expect(plain).toBe(countTokens(text) + 3 + 3);
    const twoRoles = await reserved("/v1/chat/completions", {
      model: "m",
      messages: [
        { role: "developer", content: text },
        { role: "user", content: text },
      ],
    });
    expect(twoRoles).toBe(countTokens(`${text}\n${text}`) + 2 * 3 + 3);
    const withImage = await reserved("/v1/chat/completions", {
      model: "m",
      messages: [{ role: "user", content: [{ type: "text", text }, { type: "image_url", image_url: { url: "data:," } }] }],
    });
    expect(withImage - plain).toBe(765);
    const withAudio = await reserved("/v1/chat/completions", {
      model: "m",
      messages: [{ role: "user", content: [{ type: "text", text }, { type: "input_audio", input_audio: { data: "", format: "wav" } }] }],
    });
    expect(withAudio - plain).toBe(200);
    const tools = [{ type: "function", function: { name: "weather", parameters: { type: "object", properties: { city: { type: "string" } } } } }];
    const withTools = await reserved("/v1/chat/completions", { model: "m", tools, messages: [{ role: "user", content: text }] });
    expect(withTools).toBeGreaterThan(plain + 10);
    const withToolCall = await reserved("/v1/chat/completions", {
      model: "m",
      messages: [
        { role: "user", content: text },
        { role: "assistant", content: null, tool_calls: [{ id: "c1", type: "function", function: { name: "weather", arguments: '{"city":"Paris"}' } }] },
        { role: "tool", tool_call_id: "c1", content: "sunny" },
      ],
    });
    expect(withToolCall).toBeGreaterThan(plain + 2 * 3);
  });

  it("responses: input as a string or items, and instructions", async () => {
    const input = await reserved("/v1/responses", { model: "m", input: text });
    expect(input).toBeGreaterThanOrEqual(countTokens(text));
    const withInstructions = await reserved("/v1/responses", { model: "m", input: text, instructions: "Answer in French." });
    expect(withInstructions).toBeGreaterThan(input);
    const items = await reserved("/v1/responses", { model: "m", input: [{ role: "user", content: [{ type: "input_text", text }] }] });
    expect(items).toBeGreaterThanOrEqual(countTokens(text));
  });

  it("prompts above the threshold are priced from a sample within 3 %, whether the body parses inline or off the event loop", async () => {
    for (const turns of [1_000, 12_000]) {
      const messages = Array.from({ length: turns }, (_, i) => ({ role: "user", content: `${text} 敏捷的棕色狐狸跳过了懒狗，第${i}次。` }));
      const exact = countTokens(messages.map((message) => message.content).join("\n")) + turns * 3 + 3;
      const priced = await reserved("/v1/chat/completions", { model: "m", messages });
      expect(Math.abs(priced / exact - 1)).toBeLessThan(0.03);
    }
  });

  it("another API path: priced by the estimate of its body; a path outside the API: zero prompt tokens", async () => {
    const body = { model: "m", file: "x".repeat(400) };
    expect(await reserved("/v1/audio/transcriptions", body)).toBe(Math.ceil(JSON.stringify(body).length / 4));
    expect(await reserved("/tokenize", body)).toBe(0);
  });

  it("odd spellings of an API path are priced as the engines route them", async () => {
    const chatBody = { model: "m", messages: [{ role: "user", content: text }] };
    const exact = await reserved("/v1/chat/completions", chatBody);
    expect(exact).toBeGreaterThan(countTokens(text));
    for (const path of ["/v1/chat/%63ompletions", "//v1/chat/completions", "/v1/chat/completions/", "/v1//chat/completions?x=1", "/v1/chat/completions#top"]) {
      expect(await reserved(path, chatBody), path).toBe(exact);
    }
  });
});
