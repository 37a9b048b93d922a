import { createParser } from "eventsource-parser";
import { countTokens, encode } from "gpt-tokenizer/encoding/o200k_base";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  ENGINE_HEADER,
  FAULT_HEADER,
  FAULT_MESSAGE,
  parseFault,
  startEngineSim,
  type EngineSim,
  type EngineSimOptions,
} from "./engine.js";
import { generatedToken } from "./tokens.js";

// ---- helpers ------------------------------------------------------------------------------

const sims: EngineSim[] = [];

async function start(options: EngineSimOptions = {}): Promise<EngineSim> {
  const sim = await startEngineSim(options);
  sims.push(sim);
  return sim;
}

afterEach(async () => {
  await Promise.all(sims.splice(0).map((sim) => sim.close()));
});

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

interface Chunk {
  id: string;
  object: string;
  created: number;
  model: string;
  choices: Array<{
    index: number;
    delta?: { role?: string; content?: string };
    text?: string;
    finish_reason: string | null;
  }>;
  usage?: Usage;
  error?: { message: string; type: string; code: number };
}

interface Completion {
  id: string;
  object: string;
  created: number;
  model: string;
  choices: Array<{ index: number; message?: { role: string; content: string }; text?: string; finish_reason: string }>;
  usage: Usage;
}

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: number };
}

function post(
  sim: EngineSim,
  path: string,
  body: unknown,
  init: { headers?: Record<string, string>; signal?: AbortSignal } = {},
): Promise<Response> {
  return fetch(`http://${sim.address}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...init.headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
    signal: init.signal,
  });
}

interface TimedEvent {
  data: string;
  /** ms since the request was sent */
  at: number;
}

interface StreamRead {
  events: TimedEvent[];
  /** The read error when the stream broke before its end. */
  error: unknown;
}

/** Reads an SSE body to its end (or until it breaks), timestamping every event. */
async function readSse(res: Response, sentAt: number, onEvent?: (event: TimedEvent) => void): Promise<StreamRead> {
  const events: TimedEvent[] = [];
  const parser = createParser({
    onEvent: (message) => {
      const event = { data: message.data, at: performance.now() - sentAt };
      events.push(event);
      onEvent?.(event);
    },
  });
  const body = res.body;
  if (body === null) throw new Error("response has no body");
  const reader = body.getReader();
  const decoder = new TextDecoder();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return { events, error: undefined };
      parser.feed(decoder.decode(value, { stream: true }));
    }
  } catch (error) {
    return { events, error };
  }
}

async function stream(
  sim: EngineSim,
  path: string,
  body: object,
  headers?: Record<string, string>,
): Promise<StreamRead & { res: Response; sentAt: number }> {
  const sentAt = performance.now();
  const res = await post(sim, path, { ...body, stream: true }, { headers });
  return { res, sentAt, ...(await readSse(res, sentAt)) };
}

function chunks(events: readonly TimedEvent[]): Chunk[] {
  return events.filter((e) => e.data !== "[DONE]").map((e) => JSON.parse(e.data) as Chunk);
}

/** Events carrying generated text (chat content deltas that are not the role opener, or completion text). */
function tokenEvents(events: readonly TimedEvent[]): TimedEvent[] {
  return events.filter((e) => {
    if (e.data === "[DONE]") return false;
    // In-stream error events carry no choices.
    const choice = (JSON.parse(e.data) as Partial<Chunk>).choices?.[0];
    return choice !== undefined && choice.delta?.role === undefined && (choice.delta?.content ?? choice.text) !== undefined;
  });
}

function settled(sim: EngineSim, timeout = 2000): Promise<void> {
  return vi.waitFor(
    () => {
      const stats = sim.stats();
      expect(stats.inFlight).toBe(0);
      expect(stats.running).toBe(0);
      expect(stats.queued).toBe(0);
      expect(stats.hanging).toBe(0);
    },
    { timeout, interval: 5 },
  );
}

const chatBody = (content: string, extra: object = {}): object => ({
  model: "m",
  messages: [{ role: "user", content }],
  ...extra,
});

const faultHeader = (value: string): Record<string, string> => ({ [FAULT_HEADER]: value });

/** A prompt of exactly `n` o200k tokens (" hello" is one token). */
const promptOf = (n: number): string => " hello".repeat(n);

// Bounds on timings allow the ~1 ms by which Node's cached loop clock lets a timer look early.
const SLACK_MS = 2;

// ---- tests --------------------------------------------------------------------------------

describe("streaming", () => {
  it("streams a chat completion vLLM-style: role opener, one token per event, finish reason, [DONE]", async () => {
    const sim = await start();
    const { res, events, error } = await stream(sim, "/v1/chat/completions", chatBody("Say hi", { max_tokens: 5 }));

    expect(error).toBeUndefined();
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    expect(events.at(-1)?.data).toBe("[DONE]");
    const parsed = chunks(events);
    expect(parsed).toHaveLength(6);
    expect(parsed[0]?.choices[0]?.delta).toEqual({ role: "assistant", content: "" });
    const contents = parsed.slice(1).map((c) => c.choices[0]?.delta?.content);
    expect(contents.every((c) => typeof c === "string" && encode(c).length === 1)).toBe(true);
    expect(parsed.slice(1, -1).every((c) => c.choices[0]?.finish_reason === null)).toBe(true);
    expect(parsed.at(-1)?.choices[0]?.finish_reason).toBe("length");
    for (const chunk of parsed) {
      expect(chunk).toMatchObject({ id: parsed[0]?.id, object: "chat.completion.chunk", model: "m" });
      expect(chunk.id).toMatch(/^chatcmpl-/);
      expect(Number.isInteger(chunk.created)).toBe(true);
    }
    expect(parsed.some((c) => c.usage !== undefined)).toBe(false);
  });

  it("adds a usage chunk before [DONE] when stream_options.include_usage is set", async () => {
    const sim = await start();
    const content = "Count me exactly, please: <|endoftext|> is plain text here.";
    const { events } = await stream(
      sim,
      "/v1/chat/completions",
      chatBody(content, { max_tokens: 7, stream_options: { include_usage: true } }),
    );

    const parsed = chunks(events);
    const last = parsed.at(-1);
    expect(last?.choices).toEqual([]);
    const promptTokens = countTokens(content, { disallowedSpecial: new Set() });
    expect(last?.usage).toEqual({ prompt_tokens: promptTokens, completion_tokens: 7, total_tokens: promptTokens + 7 });
    const text = parsed.map((c) => c.choices[0]?.delta?.content ?? "").join("");
    expect(encode(text)).toHaveLength(7);
  });

  it("streams a completion with text chunks and no role opener", async () => {
    const sim = await start();
    const { events } = await stream(sim, "/v1/completions", { model: "m", prompt: "Once upon", max_tokens: 3 });

    const parsed = chunks(events);
    expect(parsed).toHaveLength(3);
    expect(parsed.every((c) => c.object === "text_completion" && c.id.startsWith("cmpl-"))).toBe(true);
    expect(parsed.map((c) => c.choices[0]?.finish_reason)).toEqual([null, null, "length"]);
    expect(events.at(-1)?.data).toBe("[DONE]");
  });

  it("streams one event per choice and token for a batched completion prompt", async () => {
    const sim = await start();
    const { events } = await stream(sim, "/v1/completions", {
      model: "m",
      prompt: ["first prompt", "second"],
      max_tokens: 2,
      stream_options: { include_usage: true },
    });

    const parsed = chunks(events);
    expect(parsed.slice(0, 4).map((c) => c.choices[0]?.index)).toEqual([0, 1, 0, 1]);
    const promptTokens = countTokens("first prompt") + countTokens("second");
    expect(parsed.at(-1)?.usage).toEqual({ prompt_tokens: promptTokens, completion_tokens: 4, total_tokens: promptTokens + 4 });
  });
});

describe("non-streaming", () => {
  it("returns one chat.completion body whose usage matches gpt-tokenizer", async () => {
    const sim = await start();
    const messages = [
      { role: "system", content: "You are terse." },
      {
        role: "user",
        content: [
          { type: "text", text: "Hello" },
          { type: "image_url", image_url: { url: "x" } },
          { type: "text", text: " world" },
        ],
      },
      { role: "assistant", content: null, tool_calls: [] },
    ];
    const res = await post(sim, "/v1/chat/completions", { model: "my-model", messages, max_completion_tokens: 4, max_tokens: 9 });
    const body = (await res.json()) as Completion;

    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(body).toMatchObject({ object: "chat.completion", model: "my-model" });
    expect(body.id).toMatch(/^chatcmpl-/);
    const promptTokens = countTokens("You are terse.") + countTokens("Hello") + countTokens(" world");
    // max_completion_tokens wins over max_tokens for chat.
    expect(body.usage).toEqual({ prompt_tokens: promptTokens, completion_tokens: 4, total_tokens: promptTokens + 4 });
    expect(body.choices).toHaveLength(1);
    expect(body.choices[0]?.message?.role).toBe("assistant");
    expect(encode(body.choices[0]?.message?.content ?? "")).toHaveLength(4);
    expect(body.choices[0]?.finish_reason).toBe("length");
  });

  it("uses defaultMaxTokens when the request sets no limit, finishing with stop", async () => {
    const sim = await start({ defaultMaxTokens: 30 });
    const res = await post(sim, "/v1/completions", { model: "m", prompt: "x" });
    const body = (await res.json()) as Completion;

    expect(body.usage.completion_tokens).toBe(30);
    expect(encode(body.choices[0]?.text ?? "")).toHaveLength(30);
    expect(body.choices[0]?.finish_reason).toBe("stop");
  });

  it("caps max_tokens at maxTokensLimit", async () => {
    const sim = await start({ maxTokensLimit: 3 });
    const res = await post(sim, "/v1/completions", { model: "m", prompt: "x", max_tokens: 100 });
    const body = (await res.json()) as Completion;

    expect(body.usage.completion_tokens).toBe(3);
    expect(body.choices[0]?.finish_reason).toBe("length");
  });

  it.each([
    ["a string", "The quick brown fox", countTokens("The quick brown fox"), 1],
    ["strings", ["one", "two three"], countTokens("one") + countTokens("two three"), 2],
    ["token ids", [101, 2023, 7, 0], 4, 1],
    ["token id arrays", [[1, 2], [3, 4, 5]], 5, 2],
  ])("counts a completion prompt given as %s", async (_, prompt, promptTokens, choices) => {
    const sim = await start();
    const res = await post(sim, "/v1/completions", { model: "m", prompt, max_tokens: 2 });
    const body = (await res.json()) as Completion;

    expect(body.object).toBe("text_completion");
    expect(body.choices.map((c) => c.index)).toEqual([...Array(choices).keys()]);
    expect(body.usage).toEqual({
      prompt_tokens: promptTokens,
      completion_tokens: 2 * choices,
      total_tokens: promptTokens + 2 * choices,
    });
  });
});

describe("other endpoints and refusals", () => {
  it("serves /health and lists the configured models", async () => {
    const sim = await start({ models: ["a", "b"] });
    const health = await fetch(`http://${sim.address}/health`);
    const models = (await (await fetch(`http://${sim.address}/v1/models`)).json()) as {
      object: string;
      data: Array<{ id: string; object: string }>;
    };

    expect(health.status).toBe(200);
    expect(health.headers.get(ENGINE_HEADER)).toBe(sim.address);
    expect(models.object).toBe("list");
    expect(models.data.map((m) => [m.id, m.object])).toEqual([["a", "model"], ["b", "model"]]);
  });

  it("accepts any model when none is configured, and 404s an unknown one when models are", async () => {
    const open = await start();
    const strict = await start({ models: ["known"] });
    const anyModel = await post(open, "/v1/completions", { model: "whatever", prompt: "x" });
    const unknown = await post(strict, "/v1/completions", { model: "other", prompt: "x" });
    const body = (await unknown.json()) as ErrorBody;

    expect(anyModel.status).toBe(200);
    expect(unknown.status).toBe(404);
    expect(body.error).toMatchObject({ type: "NotFoundError", param: "model", code: 404 });
    expect(body.error.message).toContain("other");
  });

  it.each([
    ["bad JSON", "/v1/chat/completions", "{not json", /not valid JSON/],
    ["a non-object body", "/v1/chat/completions", "[1]", /JSON object/],
    ["no model", "/v1/chat/completions", { messages: [{ role: "user", content: "x" }] }, /model/],
    ["no messages", "/v1/chat/completions", { model: "m" }, /messages/],
    ["a bad max_tokens", "/v1/chat/completions", { model: "m", messages: [], max_tokens: 0 }, /max_tokens/],
    ["no prompt", "/v1/completions", { model: "m" }, /prompt/],
    ["a mixed prompt", "/v1/completions", { model: "m", prompt: ["a", 1] }, /prompt/],
    ["a negative token id", "/v1/completions", { model: "m", prompt: [1, -2] }, /prompt/],
    ["a non-boolean stream", "/v1/completions", { model: "m", prompt: "x", stream: "yes" }, /stream/],
  ])("refuses %s with 400 and an OpenAI error body", async (_, path, body, message) => {
    const sim = await start();
    const res = await post(sim, path, body);
    const error = (await res.json()) as ErrorBody;

    expect(res.status).toBe(400);
    expect(error.error).toMatchObject({ type: "BadRequestError", code: 400 });
    expect(error.error.message).toMatch(message);
    expect(sim.stats().errored).toBe(1);
  });

  it("answers unknown paths with 404 and wrong methods with 405", async () => {
    const sim = await start();
    const missing = await fetch(`http://${sim.address}/v1/embeddings`, { method: "POST", body: "{}" });
    const wrongMethod = await fetch(`http://${sim.address}/v1/chat/completions`);
    const postHealth = await fetch(`http://${sim.address}/health`, { method: "POST" });

    expect(missing.status).toBe(404);
    expect(((await missing.json()) as ErrorBody).error.code).toBe(404);
    expect(wrongMethod.status).toBe(405);
    expect(postHealth.status).toBe(405);
  });
});

describe("engine model: vLLM V1 steps in real time", () => {
  // The machine is shared: a client can see an event late but never before the server made it,
  // so every timing assertion is a lower bound measured from a send, or an ordering with margin.

  it("makes time to first token grow with the prompt: its prefill step costs prefillMsPerToken a token", async () => {
    const sim = await start({ model: { stepBaseMs: 5, prefillMsPerToken: 0.1 } });
    // The tokenizer's first use loads its tables (~100 ms): not part of any prefill.
    await stream(sim, "/v1/chat/completions", chatBody("warm up", { max_tokens: 1 }));
    const long = await stream(sim, "/v1/chat/completions", chatBody(promptOf(1500), { max_tokens: 1 }));
    const short = await stream(sim, "/v1/chat/completions", chatBody(promptOf(10), { max_tokens: 1 }));

    const longTtft = long.events[0]?.at ?? 0;
    const shortTtft = short.events[0]?.at ?? 0;
    expect(longTtft).toBeGreaterThanOrEqual(5 + 150 - SLACK_MS);
    expect(shortTtft).toBeGreaterThanOrEqual(5 + 1 - SLACK_MS);
    expect(shortTtft).toBeLessThan(longTtft);
  });

  it("produces one token per step, each step costing at least stepBaseMs", async () => {
    const sim = await start({ model: { stepBaseMs: 20 } });
    const { events } = await stream(sim, "/v1/completions", { model: "m", prompt: "x", max_tokens: 6 });

    const tokens = tokenEvents(events);
    expect(tokens).toHaveLength(6);
    expect(tokens[0]?.at).toBeGreaterThanOrEqual(20 - SLACK_MS);
    expect(tokens.at(-1)?.at).toBeGreaterThanOrEqual(6 * 20 - SLACK_MS);
    expect(sim.steps().steps).toBe(6);
  });

  it("prefills in chunks of the token budget, shared by the prompts waiting: a long prompt takes several steps", async () => {
    const sim = await start({ model: { stepBaseMs: 5, prefillMsPerToken: 0.1, tokenBudget: 600, prefixCaching: false } });
    const body = chatBody(promptOf(1000), { max_tokens: 1 });
    const results = await Promise.all([stream(sim, "/v1/chat/completions", body), stream(sim, "/v1/chat/completions", body)]);

    // 2,000 prompt tokens in steps of at most 600: the first prompt's last chunk ends the second
    // step (5 + 60 ms each), the other's the fourth (its last 200 tokens: 5 + 20 ms).
    const firstSend = Math.min(...results.map((r) => r.sentAt));
    const firstTokens = results.map((r) => r.sentAt + (r.events[0]?.at ?? 0) - firstSend).sort((a, b) => a - b);
    expect(firstTokens[0]).toBeGreaterThanOrEqual(2 * 65 - SLACK_MS);
    expect(firstTokens[1]).toBeGreaterThanOrEqual(3 * 65 + 25 - SLACK_MS);
  });

  it("runs at most maxRunning sequences; the rest wait, queued", async () => {
    const sim = await start({ model: { maxRunning: 1, stepBaseMs: 10 } });
    const body = { model: "m", prompt: "x", max_tokens: 6 };
    const first = stream(sim, "/v1/completions", body);
    await vi.waitFor(() => expect(sim.stats().running).toBe(1), { interval: 2 });
    const second = stream(sim, "/v1/completions", body);
    await vi.waitFor(() => expect(sim.stats()).toMatchObject({ running: 1, queued: 1 }), { interval: 2 });
    const [a, b] = await Promise.all([first, second]);

    // One after the other: 2 x 6 steps of 10 ms from the first send (side by side: ~60 ms).
    const secondEnd = b.sentAt + (tokenEvents(b.events).at(-1)?.at ?? 0);
    expect(secondEnd - a.sentAt).toBeGreaterThanOrEqual(120 - SLACK_MS);
    expect(sim.stats()).toMatchObject({ queued: 0, running: 0, completed: 2 });
  });

  it("makes a step slower with every sequence it decodes", async () => {
    const model = { stepBaseMs: 5, decodeMsPerSequence: 5 };
    const body = { model: "m", prompt: "x", max_tokens: 11 };
    const lastToken = (r: StreamRead & { sentAt: number }): number => r.sentAt + (tokenEvents(r.events).at(-1)?.at ?? 0);
    const alone = await stream(await start({ model }), "/v1/completions", body);
    const loaded = await start({ model });
    const batch = await Promise.all([0, 1, 2, 3].map(() => stream(loaded, "/v1/completions", body)));

    // Alone: a prefill step of 5 ms, then 10 decode steps of 5 + 5. Four: 40 decodes of 5 ms
    // over at least 11 steps of 5 ms, whatever way they are batched: ≥ 255 ms.
    expect(lastToken(alone) - alone.sentAt).toBeGreaterThanOrEqual(5 + 10 * 10 - SLACK_MS);
    const firstSend = Math.min(...batch.map((r) => r.sentAt));
    expect(Math.max(...batch.map(lastToken)) - firstSend).toBeGreaterThanOrEqual(255 - SLACK_MS);
  });

  it("serves a prompt's leading 16-token blocks it already holds from its prefix cache", async () => {
    const sim = await start();
    const system = { role: "system", content: promptOf(100) };
    const ask = (question: string) => post(sim, "/v1/chat/completions", { model: "m", messages: [system, { role: "user", content: question }], max_tokens: 1 });
    await ask("first question");
    expect(sim.stats().cachedPromptTokens).toBe(0);
    await ask("another one");
    // The system prompt's 6 full blocks; its 7th block also holds the question.
    expect(sim.stats().cachedPromptTokens).toBe(96);
    const promptIds = (count: number) => Array.from({ length: count }, (_, i) => 1000 + i);
    const ids = (head: number[]) => post(sim, "/v1/completions", { model: "m", prompt: [...head, ...promptIds(40)], max_tokens: 1 });
    await ids([1, 2, 3]);
    await ids([1, 2, 4]);
    expect(sim.stats().cachedPromptTokens).toBe(96);
    await ids([1, 2, 3]);
    // 43 tokens: 2 full blocks, both held.
    expect(sim.stats().cachedPromptTokens).toBe(96 + 32);
    // The second block's tokens, now first: the hashes chain, so a block is known by its whole prefix.
    await post(sim, "/v1/completions", { model: "m", prompt: [...Array.from({ length: 16 }, (_, i) => 1013 + i), ...promptIds(20)], max_tokens: 1 });
    expect(sim.stats().cachedPromptTokens).toBe(96 + 32);

    const uncached = await start({ model: { prefixCaching: false } });
    for (let i = 0; i < 2; i++) await post(uncached, "/v1/completions", { model: "m", prompt: promptOf(100), max_tokens: 1 });
    expect(uncached.stats().cachedPromptTokens).toBe(0);
  });

  it("preempts a sequence when its KV blocks run out and still streams every token once, in order", async () => {
    // 10 blocks of 16 tokens; each request needs 7 by its end: two cannot run to the end side by side.
    const sim = await start({ model: { kvBlocks: 10, prefixCaching: false } });
    const body = (first: number) => ({ model: "m", prompt: Array.from({ length: 64 }, (_, i) => first + i), max_tokens: 40, stream_options: { include_usage: true } });
    const results = await Promise.all([stream(sim, "/v1/completions", body(0)), stream(sim, "/v1/completions", body(100))]);

    for (const { events, error } of results) {
      expect(error).toBeUndefined();
      const texts = tokenEvents(events).map((e) => (JSON.parse(e.data) as Chunk).choices[0]?.text);
      expect(texts).toEqual(Array.from({ length: 40 }, (_, step) => generatedToken(step)));
      expect(chunks(events).at(-1)?.usage?.completion_tokens).toBe(40);
    }
    expect(sim.stats()).toMatchObject({ completed: 2, completionTokens: 80 });
  });

  it("refuses with 400 a request its KV cache could never hold, as vLLM refuses one longer than its context", async () => {
    const sim = await start({ model: { kvBlocks: 4 } });
    const tooLong = await post(sim, "/v1/chat/completions", chatBody(promptOf(60), { max_tokens: 10, stream: true }));
    const body = (await tooLong.json()) as ErrorBody;
    const fits = await post(sim, "/v1/chat/completions", chatBody(promptOf(50), { max_tokens: 10 }));

    expect(tooLong.status).toBe(400);
    expect(body.error).toMatchObject({ type: "BadRequestError", param: "messages", code: 400 });
    expect(body.error.message).toMatch(/70 tokens .* do not fit/);
    expect(fits.status).toBe(200);
  });
});

describe("faults", () => {
  it.each([500, 503, 429])("status=%i replies at once with that status and an OpenAI error body", async (status) => {
    const sim = await start();
    const res = await post(sim, "/v1/chat/completions", chatBody("x", { stream: true }), {
      headers: faultHeader(`status=${status}`),
    });
    const body = (await res.json()) as ErrorBody;

    expect(res.status).toBe(status);
    expect(body.error.code).toBe(status);
    expect(body.error.message).toBe(FAULT_MESSAGE);
    expect(sim.stats()).toMatchObject({ errored: 1, completed: 0, completionTokens: 0 });
  });

  it("reset-after=N destroys the connection after N streamed tokens", async () => {
    const sim = await start();
    const body = chatBody("x", { max_tokens: 10 });
    const { res, events, error } = await stream(sim, "/v1/chat/completions", body, faultHeader("reset-after=3"));

    expect(res.status).toBe(200);
    expect(error).toBeInstanceOf(Error);
    expect(tokenEvents(events)).toHaveLength(3);
    expect(events.some((e) => e.data === "[DONE]")).toBe(false);
    await settled(sim);
    expect(sim.stats()).toMatchObject({ aborted: 1, completed: 0, completionTokens: 0 });
  });

  it("reset-after=0 cuts the stream with only the headers sent", async () => {
    const sim = await start();
    const { events, error } = await stream(sim, "/v1/completions", { model: "m", prompt: "x" }, faultHeader("reset-after=0"));

    expect(error).toBeInstanceOf(Error);
    expect(events).toHaveLength(0);
  });

  it("reset-after beyond the answer still cuts the stream before its end", async () => {
    const sim = await start();
    const { events, error } = await stream(
      sim,
      "/v1/completions",
      { model: "m", prompt: "x", max_tokens: 2, stream_options: { include_usage: true } },
      faultHeader("reset-after=50"),
    );

    expect(error).toBeInstanceOf(Error);
    expect(tokenEvents(events)).toHaveLength(2);
    expect(events.some((e) => e.data === "[DONE]" || e.data.includes('"usage"'))).toBe(false);
  });

  it("reset-after on a non-streaming request fails the response with no body", async () => {
    const sim = await start();
    const attempt = post(sim, "/v1/completions", { model: "m", prompt: "x" }, { headers: faultHeader("reset-after=2") });

    await expect(attempt).rejects.toThrow();
    await settled(sim);
    expect(sim.stats().aborted).toBe(1);
  });

  it("error-after=N sends an in-stream error event and [DONE] after N tokens", async () => {
    const sim = await start();
    const body = chatBody("x", { max_tokens: 10 });
    const { res, events, error } = await stream(sim, "/v1/chat/completions", body, faultHeader("error-after=2"));

    expect(res.status).toBe(200);
    expect(error).toBeUndefined();
    expect(tokenEvents(events)).toHaveLength(2);
    const last = chunks(events).at(-1);
    expect(last?.error).toMatchObject({ message: FAULT_MESSAGE, type: "InternalServerError", code: 500 });
    expect(events.at(-1)?.data).toBe("[DONE]");
    await settled(sim);
    expect(sim.stats()).toMatchObject({ errored: 1, completed: 0 });
  });

  it("error-after on a non-streaming request replies 500", async () => {
    const sim = await start();
    const res = await post(sim, "/v1/completions", { model: "m", prompt: "x" }, { headers: faultHeader("error-after=1") });

    expect(res.status).toBe(500);
    expect(((await res.json()) as ErrorBody).error.type).toBe("InternalServerError");
  });

  it("hang sends stream headers but never a token, until the client gives up", async () => {
    const sim = await start();
    const controller = new AbortController();
    const res = await post(sim, "/v1/chat/completions", chatBody("x", { stream: true }), {
      headers: faultHeader("hang"),
      signal: controller.signal,
    });
    const read = readSse(res, performance.now());
    await new Promise((resolve) => setTimeout(resolve, 100));

    expect(res.status).toBe(200);
    expect(sim.stats()).toMatchObject({ inFlight: 1, hanging: 1, running: 0, queued: 0 });
    controller.abort();
    expect((await read).events).toHaveLength(0);
    await settled(sim);
    expect(sim.stats()).toMatchObject({ aborted: 1, completed: 0 });
  });

  it("hang on a non-streaming request sends nothing at all", async () => {
    const sim = await start();
    const attempt = post(sim, "/v1/completions", { model: "m", prompt: "x" }, {
      headers: faultHeader("hang"),
      signal: AbortSignal.timeout(100),
    });

    await expect(attempt).rejects.toThrow(/aborted|timeout/i);
    await settled(sim);
  });

  it("plays the options' fault, replaced by setFault, overridden by the header", async () => {
    const sim = await start({ fault: { kind: "status", status: 503 } });
    const request = (headers?: Record<string, string>): Promise<number> =>
      post(sim, "/v1/completions", { model: "m", prompt: "x" }, { headers }).then((r) => r.status);

    expect(await request()).toBe(503);
    expect(await request(faultHeader("status=429"))).toBe(429);
    sim.setFault({ kind: "error", afterTokens: 0 });
    expect(await request()).toBe(500);
    sim.setFault(undefined);
    expect(await request()).toBe(200);
  });

  it("refuses a malformed fault header with 400", async () => {
    const sim = await start();
    const res = await post(sim, "/v1/completions", { model: "m", prompt: "x" }, { headers: faultHeader("explode") });

    expect(res.status).toBe(400);
    expect(((await res.json()) as ErrorBody).error.message).toContain(FAULT_HEADER);
  });

  it("parses every fault spelling and rejects the rest", () => {
    expect(parseFault("status=503")).toEqual({ kind: "status", status: 503 });
    expect(parseFault(" reset-after=4 ")).toEqual({ kind: "reset", afterTokens: 4 });
    expect(parseFault("error-after=0")).toEqual({ kind: "error", afterTokens: 0 });
    expect(parseFault("hang")).toEqual({ kind: "hang" });
    for (const bad of ["status=200", "status=600", "reset-after=-1", "reset-after", "hang=1", ""]) {
      expect(() => parseFault(bad), bad).toThrow(FAULT_HEADER);
    }
  });
});

describe("client disconnect and shutdown", () => {
  it("stops generating when the client goes away mid-stream", async () => {
    // 2 s per decode step: the sequence can only leave this fast if aborting drops it from the batch.
    const sim = await start({ model: { decodeMsPerSequence: 2000 } });
    const controller = new AbortController();
    const sentAt = performance.now();
    const body = { model: "m", prompt: "x", max_tokens: 100, stream: true };
    const res = await post(sim, "/v1/completions", body, { signal: controller.signal });
    const read = readSse(res, sentAt, () => controller.abort());

    expect(tokenEvents((await read).events)).toHaveLength(1);
    await settled(sim, 500);
    expect(sim.stats()).toMatchObject({ aborted: 1, completed: 0, completionTokens: 0 });
  });

  it("drops a queued request whose client went away, without taking a slot later", async () => {
    // One sequence at a time, decoding a token a second: the first holds the only slot.
    const sim = await start({ model: { maxRunning: 1, decodeMsPerSequence: 1000 } });
    const holding = new AbortController();
    const queued = new AbortController();
    const body = { model: "m", prompt: "x", max_tokens: 100, stream: true };
    await post(sim, "/v1/completions", body, { signal: holding.signal });
    await post(sim, "/v1/completions", body, { signal: queued.signal });
    expect(sim.stats()).toMatchObject({ inFlight: 2, running: 1, queued: 1 });

    queued.abort();
    await vi.waitFor(() => expect(sim.stats()).toMatchObject({ inFlight: 1, queued: 0 }), { timeout: 1000, interval: 5 });
    expect(sim.stats().running).toBe(1);
    holding.abort();
    await settled(sim);
  });

  it("close() ends open streams, leaves nothing in flight and can be called twice", async () => {
    // 5 s per decode step: settling fast proves close() dropped the step under way.
    const sim = await start({ model: { decodeMsPerSequence: 5000 } });
    const body = { model: "m", prompt: "x", stream: true };
    const hanging = await post(sim, "/v1/completions", body, { headers: faultHeader("hang") });
    const decoding = await post(sim, "/v1/completions", body);
    let onFirstToken = (): void => {};
    const firstToken = new Promise<void>((resolve) => (onFirstToken = resolve));
    const reads = [readSse(hanging, 0), readSse(decoding, 0, () => onFirstToken())];
    await firstToken;
    expect(sim.stats()).toMatchObject({ inFlight: 2, running: 1, hanging: 1 });

    await Promise.all([sim.close(), sim.close()]);
    const [a, b] = await Promise.all(reads);
    expect(a?.error).toBeInstanceOf(Error);
    expect(b?.error).toBeInstanceOf(Error);
    await settled(sim, 500);
    expect(sim.stats()).toMatchObject({ aborted: 2, received: 2 });
    await expect(fetch(`http://${sim.address}/health`)).rejects.toThrow();
  });
});

describe("stats", () => {
  it("counts requests per path and the tokens of completed generations", async () => {
    const sim = await start();
    await fetch(`http://${sim.address}/health`);
    await fetch(`http://${sim.address}/health?probe=1`);
    const nonStreamed = await post(sim, "/v1/completions", { model: "m", prompt: "ab cd", max_tokens: 3 });
    const usage = ((await nonStreamed.json()) as Completion).usage;
    await stream(sim, "/v1/chat/completions", chatBody("hello world", { max_tokens: 4 }));
    await post(sim, "/v1/completions", { model: "m", prompt: "x" }, { headers: faultHeader("status=503") });
    await settled(sim);

    expect(usage.completion_tokens).toBe(3);
    expect(sim.stats()).toEqual({
      received: 5,
      inFlight: 0,
      queued: 0,
      running: 0,
      hanging: 0,
      completed: 4,
      errored: 1,
      aborted: 0,
      byPath: { "/health": 2, "/v1/completions": 2, "/v1/chat/completions": 1 },
      // A stream without include_usage still counts what its usage would have said.
      promptTokens: countTokens("ab cd") + countTokens("hello world"),
      completionTokens: 3 + 4,
      cachedPromptTokens: 0,
    });
  });

  it("refuses nonsensical options", async () => {
    await expect(startEngineSim({ model: { stepBaseMs: 0 } })).rejects.toThrow(/model.stepBaseMs/);
    await expect(startEngineSim({ model: { maxRunning: 1.5 } })).rejects.toThrow(/model.maxRunning/);
    await expect(startEngineSim({ model: { prefillMsPerToken: -1 } })).rejects.toThrow(/model.prefillMsPerToken/);
    await expect(startEngineSim({ defaultMaxTokens: 0 })).rejects.toThrow(/defaultMaxTokens/);
  });
});
