import fc from "fast-check";
import { countTokens } from "gpt-tokenizer/encoding/o200k_base";
import { describe, expect, it } from "vitest";
import { openAi } from "../../src/inference/apis/openai/index.js";
import type { ResponseProgress } from "../../src/inference/response.js";
import { outputTokens } from "../../src/inference/tokens.js";

const sse = (events: unknown[]): Buffer =>
  Buffer.from(events.map((event) => `data: ${typeof event === "string" ? event : JSON.stringify(event)}\n\n`).join(""));

const stream = sse([
  { choices: [{ delta: { role: "assistant", content: "" } }] },
  { choices: [{ delta: { content: "Héllo" } }] },
  { choices: [{ delta: { content: " 世界" } }] },
  { choices: [{ delta: { tool_calls: [{ index: 0 }] } }] },
  { choices: [], usage: { prompt_tokens: 12, completion_tokens: 3, total_tokens: 15 } },
  "[DONE]",
]);

function scan(chunks: Buffer[]): ResponseProgress {
  return scanWithFirst(chunks).total;
}

/** Sums the progress of every stretch; `firstAt` is the stretch that reported the first token (chunks.length = end()). */
function scanWithFirst(chunks: Buffer[]): { total: ResponseProgress; firstAt: number[] } {
  const scanner = openAi.scanner("text/event-stream; charset=utf-8", 1 << 20, outputTokens);
  const total: ResponseProgress = { generated: 0 };
  const firstAt: number[] = [];
  [...chunks.map((chunk) => scanner.push(chunk)), scanner.end()].forEach((progress, i) => {
    total.generated += progress.generated;
    if (progress.firstToken) {
      total.firstToken = progress.firstToken;
      firstAt.push(i);
    }
    if (progress.usage) total.usage = progress.usage;
    if (progress.error) total.error = progress.error;
  });
  return { total, firstAt };
}

describe("response scanning", () => {
  /** The stream's output: each event's text by o200k, a tool-call delta without text as one. */
  const streamed = countTokens("Héllo") + countTokens(" 世界") + 1;

  it("counts the tokens of events that carry output and reads the usage chunk", () => {
    expect(scan([stream])).toEqual({ generated: streamed, firstToken: "event", usage: { promptTokens: 12, completionTokens: 3 } });
  });

  it("counts several tokens sent in one event (speculative decoding, merged outputs) as several", () => {
    const merged = sse([{ choices: [{ delta: { content: " the quick brown fox jumps" } }] }, { choices: [{ delta: { content: "!" } }] }]);
    expect(scan([merged]).generated).toBe(countTokens(" the quick brown fox jumps") + 1);
  });

  it("reads a Responses API stream: output deltas, the usage of the completed response, failures", () => {
    const events = [
      { type: "response.created", response: { id: "r1", status: "in_progress" } },
      { type: "response.output_item.added", item: { type: "message" } },
      { type: "response.reasoning_summary_text.delta", delta: "Think" },
      { type: "response.output_text.delta", delta: " Hello there" },
      { type: "response.function_call_arguments.delta", delta: '{"a":' },
      { type: "response.output_text.done", text: " Hello there" },
      { type: "response.completed", response: { usage: { input_tokens: 9, output_tokens: 6, input_tokens_details: { cached_tokens: 4 } } } },
    ];
    const texts = events.map((event) => `event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`);
    const body = Buffer.from(texts.join(""));
    // Cut one byte before the first output event ends: it fires in the second chunk.
    const cut = Buffer.byteLength(texts.slice(0, 3).join("")) - 1;
    const { total, firstAt } = scanWithFirst([body.subarray(0, cut), body.subarray(cut)]);
    expect(total).toEqual({
      generated: countTokens("Think") + countTokens(" Hello there") + countTokens('{"a":'),
      firstToken: "event",
      usage: { promptTokens: 9, completionTokens: 6, cachedTokens: 4 },
    });
    expect(firstAt).toEqual([1]);
    const failed = sse([{ type: "response.failed", response: { error: { message: "engine died" }, usage: { input_tokens: 9, output_tokens: 0 } } }]);
    expect(scan([failed])).toEqual({ generated: 0, error: "engine died", usage: { promptTokens: 9, completionTokens: 0 } });
    expect(scan([sse([{ type: "error", code: "server_error", message: "overloaded" }])])).toEqual({ generated: 0, error: "overloaded" });
  });

  it("reads a Responses API JSON response's usage", () => {
    const scanner = openAi.scanner("application/json", 1 << 20, outputTokens);
    scanner.push(Buffer.from(JSON.stringify({ object: "response", output: [], usage: { input_tokens: 7, output_tokens: 3 } })));
    expect(scanner.end()).toEqual({ generated: 0, usage: { promptTokens: 7, completionTokens: 3 } });
  });

  it("gives the same answer wherever the stream is split, even inside a UTF-8 character", () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: stream.length - 1 }), { maxLength: 40 }), (cuts) => {
        const points = [0, ...cuts.sort((a, b) => a - b), stream.length];
        const chunks = points.slice(1).map((end, i) => stream.subarray(points[i], end));
        expect(scan(chunks)).toEqual({ generated: streamed, firstToken: "event", usage: { promptTokens: 12, completionTokens: 3 } });
      }),
    );
  });

  it("takes reasoning as output even beside an empty or null content", () => {
    const reasoning = sse([
      { choices: [{ delta: { role: "assistant", content: "" } }] },
      { choices: [{ delta: { content: "", reasoning_content: "Let" } }] },
      { choices: [{ delta: { content: null, reasoning: " me" } }] },
    ]);
    expect(scan([reasoning])).toEqual({ generated: countTokens("Let") + countTokens(" me"), firstToken: "event" });
  });

  it("reports an error event and ignores garbage lines", () => {
    expect(scan([Buffer.from("data: not json\n\n: keep-alive\n\n"), sse([{ error: { message: "engine died" } }])])).toEqual({
      generated: 0,
      error: "engine died",
    });
  });

  it("reads usage from a plain JSON response at its end", () => {
    const scanner = openAi.scanner("application/json", 1 << 20, outputTokens);
    const body = Buffer.from(JSON.stringify({ choices: [{ message: { content: "hi" } }], usage: { prompt_tokens: 5, completion_tokens: 2 } }));
    // The body is sent whole after generation: its first byte ends prefill, but is no TTFT.
    expect(scanner.push(body.subarray(0, 0))).toEqual({ generated: 0 });
    expect(scanner.push(body.subarray(0, 10))).toEqual({ generated: 0, firstToken: "body" });
    expect(scanner.push(body.subarray(10))).toEqual({ generated: 0 });
    expect(scanner.end()).toEqual({ generated: 0, usage: { promptTokens: 5, completionTokens: 2 } });
  });

  it("reads cached prompt tokens from usage details", () => {
    const usage = { prompt_tokens: 40, completion_tokens: 2, prompt_tokens_details: { cached_tokens: 32 } };
    expect(scan([sse([{ choices: [], usage }])]).usage).toEqual({ promptTokens: 40, completionTokens: 2, cachedTokens: 32 });
  });

  it("takes the first byte of an unknown content type as the first token", () => {
    const scanner = openAi.scanner("application/octet-stream", 8, outputTokens);
    expect(scanner.push(Buffer.from("ab"))).toEqual({ generated: 0, firstToken: "body" });
    expect(scanner.push(Buffer.from("cd"))).toEqual({ generated: 0 });
  });

  it("does not keep a JSON response larger than the limit", () => {
    const scanner = openAi.scanner("application/json", 8, outputTokens);
    scanner.push(Buffer.from('{"usage": {"prompt_tokens": 1, "completion_tokens": 1}}'));
    expect(scanner.end()).toEqual({ generated: 0 });
  });

  describe("first token in streams shaped like the engine simulator's", () => {
    /** One SSE event (or comment) and the generated output it carries, if any. */
    type Piece = { text: string; output?: string };
    const data = (value: unknown): string => `data: ${JSON.stringify(value)}`;
    const chunk = (delta: unknown) => ({ id: "chatcmpl-1", object: "chat.completion.chunk", choices: [{ index: 0, delta, finish_reason: null }] });
    const silent: fc.Arbitrary<Piece>[] = [
      fc.constant({ text: data(chunk({ role: "assistant", content: "" })) }),
      fc.constant({ text: ": keep-alive" }),
      fc.constant({ text: data(chunk({ content: "" })) }),
      fc.constant({ text: data({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 0 } }) }),
    ];
    const loud: fc.Arbitrary<Piece>[] = [
      fc.string({ unit: "grapheme", minLength: 1, maxLength: 6 }).map((t) => ({ text: data(chunk({ content: t })), output: t })),
      fc.constantFrom("Héllo", " 世界", "🙂").map((t) => ({ text: data(chunk({ reasoning_content: t })), output: t })),
      fc.constant({ text: data(chunk({ tool_calls: [{ index: 0, function: { arguments: '{"city": "巴黎"}' } }] })), output: '{"city": "巴黎"}' }),
      fc.constantFrom("once", " upon").map((t) => ({ text: data({ object: "text_completion", choices: [{ index: 0, text: t }] }), output: t })),
    ];
    const shape = fc.record({
      pieces: fc.tuple(fc.array(fc.oneof(...silent), { maxLength: 3 }), fc.array(fc.oneof(...silent, ...loud), { maxLength: 8 })),
      crlf: fc.boolean(),
      done: fc.boolean(),
    });

    it("fires on the same event, once, with the same counts, wherever the stream is split", () => {
      fc.assert(
        fc.property(shape, fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 30 }), ({ pieces, crlf, done }, fractions) => {
          const eol = crlf ? "\r\n" : "\n";
          const all = [...pieces[0], ...pieces[1]];
          if (done) all.push({ text: "data: [DONE]" });
          const texts = all.map((piece) => Buffer.from(piece.text + eol + eol));
          const body = Buffer.concat(texts);
          const firstEvent = all.findIndex((piece) => piece.output !== undefined);
          // The event is complete at the last byte of its blank line: that byte's chunk must fire.
          const firesAtByte = firstEvent < 0 ? -1 : texts.slice(0, firstEvent + 1).reduce((sum, t) => sum + t.length, 0) - 1;
          const cuts = [...new Set(fractions.map((f) => Math.floor(f * body.length)))].sort((a, b) => a - b);
          const points = [...new Set([0, ...cuts, body.length])];
          const chunks = points.slice(1).map((end, i) => body.subarray(points[i], end));
          const { total, firstAt } = scanWithFirst(chunks);
          expect(total.generated).toBe(all.reduce((sum, piece) => sum + (piece.output === undefined ? 0 : Math.max(1, countTokens(piece.output))), 0));
          if (firstEvent < 0) {
            expect(firstAt).toEqual([]);
            return;
          }
          const expectedChunk = points.findIndex((end, i) => i > 0 && firesAtByte < end) - 1;
          expect(firstAt).toEqual([expectedChunk]);
        }),
        { numRuns: 500 },
      );
    });
  });
});
