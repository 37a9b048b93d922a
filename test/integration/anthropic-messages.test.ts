// The Anthropic Messages API end to end: an engine speaking it over real HTTP, the real sidecar, and
// the Envoy-faithful ext_proc client between them.
import { countTokens } from "gpt-tokenizer/encoding/o200k_base";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { EnvoyExtProcClient, httpUpstream, type ExchangeResult } from "../envoy/ext-proc-client.js";
import { parseInferenceRequest } from "../../src/inference/apis/index.js";
import { TokenCounter } from "../../src/inference/tokens.js";
import { GENERATED, startAnthropicUpstream, type AnthropicUpstream, type MessagesUsage } from "../support/anthropic-upstream.js";
import { gate } from "../support/gate.js";
import { idle, LogCapture, startTestSidecar, totalLoad } from "../support/sidecar.js";

/** The engine's own counts: a prompt mostly read from its cache, and the output. */
const usage: MessagesUsage = { input_tokens: 40, cache_creation_input_tokens: 960, cache_read_input_tokens: 3000, output_tokens: 9 };
const reportedPrompt = 40 + 960 + 3000;

let upstream: AnthropicUpstream;
let sidecar: Awaited<ReturnType<typeof startTestSidecar>>;
let client: EnvoyExtProcClient;
const capture = new LogCapture();

beforeAll(async () => {
  upstream = await startAnthropicUpstream(usage);
  // One request per engine at a time, so a second one while the first is open is refused with 429;
  // bodies up to 64 KiB, so a larger one is refused (413) while it arrives, before any decision.
  const extra = { scheduling: { maxRequestsPerEngine: 1 }, extproc: { maxRequestBodyBytes: 65_536 } };
  sidecar = await startTestSidecar([{ name: "claude", models: ["claude"], endpoints: [upstream.address] }], extra, capture);
  client = new EnvoyExtProcClient(`127.0.0.1:${sidecar.ports.extproc}`);
});
afterEach(async () => {
  await expect.poll(() => totalLoad(sidecar)).toEqual(idle);
});
afterAll(async () => {
  client.close();
  await sidecar.stop(0);
  await upstream.close();
});

const messagesBody = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  model: "claude",
  max_tokens: 256,
  system: [{ type: "text", text: "You answer in French.", cache_control: { type: "ephemeral" } }],
  tools: [{ name: "get_weather", description: "Weather for a city", input_schema: { type: "object", properties: { city: { type: "string" } } } }],
  messages: [
    { role: "user", content: "What is the weather in Brest?" },
    { role: "assistant", content: [{ type: "tool_use", id: "toolu_1", name: "get_weather", input: { city: "Brest" } }] },
    { role: "user", content: [{ type: "tool_result", tool_use_id: "toolu_1", content: "Drizzle, 14 °C" }] },
  ],
  ...extra,
});

/** The prompt tokens the sidecar counts for a body (the default o200k tokenizer and prices). */
function counted(body: Record<string, unknown>): number {
  const parsed = parseInferenceRequest("/v1/messages", Buffer.from(JSON.stringify(body)));
  if (!parsed.ok) throw new Error(parsed.message);
  const tokens = new TokenCounter({ countWholeUpTo: 65_536, imageTokens: 765, audioTokens: 200 }).promptTokens(parsed.request);
  if (typeof tokens !== "number") throw new Error("o200k counts synchronously");
  return tokens;
}

const exchange = (body: unknown, requestId: string, path = "/v1/messages"): Promise<ExchangeResult> =>
  client.exchange({
    upstream: httpUpstream(),
    request: { method: "POST", path, headers: { "content-type": "application/json", "anthropic-version": "2023-06-01", "x-request-id": requestId }, body: JSON.stringify(body) },
  });

const finished = (requestId: string) => capture.lines.filter((line) => line["requestId"] === requestId && line["msg"] === "request finished");

describe("the Anthropic Messages API through the sidecar", () => {
  it("a stream: prefill ends at the first content_block_delta, not at the stream's end, and usage reconciles", async () => {
    const body = messagesBody({ stream: true });
    const prompt = counted(body);
    const [beforeStart, beforeFirstDelta, beforeRest] = [gate(), gate(), gate()];
    upstream.hold({ beforeStart: beforeStart.promise, beforeFirstDelta: beforeFirstDelta.promise, beforeRest: beforeRest.promise });
    const pending = exchange(body, "messages-stream");

    // Picked on the counted prompt: tools, system, the tool call and its result.
    await expect.poll(() => totalLoad(sidecar)).toEqual({ requests: 1, prefillRequests: 1, prefillTokens: prompt, tokensHeld: prompt, ledger: 1 });

    // message_start: the engine's prompt count (cache reads and writes are prompt) replaces ours; still in prefill.
    beforeStart.open();
    await expect.poll(() => totalLoad(sidecar)).toEqual({ requests: 1, prefillRequests: 1, prefillTokens: reportedPrompt, tokensHeld: reportedPrompt + 1, ledger: 1 });

    // The first content_block_delta: prefill is over while the stream is still open.
    beforeFirstDelta.open();
    const firstToken = { requests: 1, prefillRequests: 0, prefillTokens: 0, tokensHeld: reportedPrompt + 1 + countTokens(GENERATED[0]!), ledger: 1 };
    await expect.poll(() => totalLoad(sidecar)).toEqual(firstToken);

    beforeRest.open();
    const result = await pending;
    expect(result.status).toBe(200);
    const text = result.body.toString("utf8");
    expect(text).toContain("event: message_start");
    expect(text.endsWith('event: message_stop\ndata: {"type":"message_stop"}\n\n')).toBe(true);
    await expect.poll(() => finished("messages-stream").length).toBe(1);
    expect(finished("messages-stream")[0]).toMatchObject({
      outcome: "ok",
      promptTokens: prompt,
      reportedPromptTokens: reportedPrompt,
      cachedTokens: 3000,
      completionTokens: usage.output_tokens,
      ttftMs: expect.any(Number),
    });
    // The body went to the engine as sent: no stream_options for this API.
    expect(upstream.received.at(-1)).toEqual(body);
  });

  it("a JSON message: its usage reconciles at the end", async () => {
    const body = messagesBody();
    const result = await exchange(body, "messages-json");
    expect(result.status).toBe(200);
    expect(JSON.parse(result.body.toString("utf8"))).toMatchObject({ type: "message", usage });
    await expect.poll(() => finished("messages-json").length).toBe(1);
    expect(finished("messages-json")[0]).toMatchObject({ outcome: "ok", promptTokens: counted(body), reportedPromptTokens: reportedPrompt, cachedTokens: 3000, completionTokens: 9 });
  });

  it("refusals come in Anthropic's error shape: 400 bad body, 404 no pool, 413 too large, 429 every engine at its limit", async () => {
    const received = upstream.received.length;
    const bad = await exchange({ model: "claude", max_tokens: 8, messages: [{ role: "user", content: [{ type: "text", text: 42 }] }] }, "messages-400");
    expect(bad.immediateResponse?.status).toBe(400);
    expect(JSON.parse(bad.body.toString("utf8"))).toEqual({
      type: "error",
      error: { type: "invalid_request_error", message: "'messages[0].content[0].text' must be a string" },
      request_id: "messages-400",
    });

    const unknown = await exchange(messagesBody({ model: "claude-unknown" }), "messages-404");
    expect(unknown.immediateResponse?.status).toBe(404);
    expect(JSON.parse(unknown.body.toString("utf8"))).toEqual({
      type: "error",
      error: { type: "not_found_error", message: "no pool serves model 'claude-unknown'" },
      request_id: "messages-404",
    });

    const large = await exchange(messagesBody({ messages: [{ role: "user", content: "x".repeat(100_000) }] }), "messages-413");
    expect(large.immediateResponse?.status).toBe(413);
    expect(JSON.parse(large.body.toString("utf8"))).toEqual({
      type: "error",
      error: { type: "request_too_large", message: "request body exceeds the limit of 65536 bytes" },
      request_id: "messages-413",
    });

    const held = gate();
    upstream.hold({ beforeStart: held.promise });
    const open = exchange(messagesBody({ stream: true }), "messages-open");
    await expect.poll(() => totalLoad(sidecar).then((load) => load.requests)).toBe(1);
    const limited = await exchange(messagesBody({ stream: true }), "messages-429");
    expect(limited.immediateResponse?.status).toBe(429);
    expect(JSON.parse(limited.body.toString("utf8"))).toMatchObject({ type: "error", error: { type: "rate_limit_error", message: expect.stringContaining("at its limit of 1") } });
    held.open();
    expect((await open).status).toBe(200);
    // Only the request that was routed reached the engine.
    expect(upstream.received.length).toBe(received + 1);
  });

  it("the OpenAI paths of the same sidecar keep OpenAI's error shape", async () => {
    const result = await exchange({ model: "claude-unknown", messages: [{ role: "user", content: "hi" }] }, "chat-404", "/v1/chat/completions");
    expect(result.immediateResponse?.status).toBe(404);
    expect(JSON.parse(result.body.toString("utf8"))).toEqual({
      error: { message: "no pool serves model 'claude-unknown'", type: "invalid_request_error", param: null, code: "model_not_found" },
    });
  });
});
