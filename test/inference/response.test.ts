import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { scannerFor, type ResponseProgress } from "../../src/inference/response.js";

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
  const scanner = scannerFor("text/event-stream; charset=utf-8", 1 << 20);
  const total: ResponseProgress = { generated: 0 };
  const firstAt: number[] = [];
  [...chunks.map((chunk) => scanner.push(chunk)), scanner.end()].forEach((progress, i) => {
    total.generated += progress.generated;
    if (progress.firstToken) {
      total.firstToken = true;
      firstAt.push(i);
    }
    if (progress.usage) total.usage = progress.usage;
    if (progress.error) total.error = progress.error;
  });
  return { total, firstAt };
}

describe("response scanning", () => {
  it("counts events that carry output and reads the usage chunk", () => {
    expect(scan([stream])).toEqual({ generated: 3, firstToken: true, usage: { promptTokens: 12, completionTokens: 3 } });
  });

  it("gives the same answer wherever the stream is split, even inside a UTF-8 character", () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: stream.length - 1 }), { maxLength: 40 }), (cuts) => {
        const points = [0, ...cuts.sort((a, b) => a - b), stream.length];
        const chunks = points.slice(1).map((end, i) => stream.subarray(points[i], end));
        expect(scan(chunks)).toEqual({ generated: 3, firstToken: true, usage: { promptTokens: 12, completionTokens: 3 } });
      }),
    );
  });

  it("takes reasoning as output even beside an empty or null content", () => {
    const reasoning = sse([
      { choices: [{ delta: { role: "assistant", content: "" } }] },
      { choices: [{ delta: { content: "", reasoning_content: "Let" } }] },
      { choices: [{ delta: { content: null, reasoning: " me" } }] },
    ]);
    expect(scan([reasoning])).toEqual({ generated: 2, firstToken: true });
  });

  it("reports an error event and ignores garbage lines", () => {
    expect(scan([Buffer.from("data: not json\n\n: keep-alive\n\n"), sse([{ error: { message: "engine died" } }])])).toEqual({
      generated: 0,
      error: "engine died",
    });
  });

  it("reads usage from a plain JSON response at its end", () => {
    const scanner = scannerFor("application/json", 1 << 20);
    const body = Buffer.from(JSON.stringify({ choices: [{ message: { content: "hi" } }], usage: { prompt_tokens: 5, completion_tokens: 2 } }));
    // The body is sent whole after generation: its first byte is the first token.
    expect(scanner.push(body.subarray(0, 0))).toEqual({ generated: 0 });
    expect(scanner.push(body.subarray(0, 10))).toEqual({ generated: 0, firstToken: true });
    expect(scanner.push(body.subarray(10))).toEqual({ generated: 0 });
    expect(scanner.end()).toEqual({ generated: 0, usage: { promptTokens: 5, completionTokens: 2 } });
  });

  it("reads cached prompt tokens from usage details", () => {
    const usage = { prompt_tokens: 40, completion_tokens: 2, prompt_tokens_details: { cached_tokens: 32 } };
    expect(scan([sse([{ choices: [], usage }])]).usage).toEqual({ promptTokens: 40, completionTokens: 2, cachedTokens: 32 });
  });

  it("takes the first byte of an unknown content type as the first token", () => {
    const scanner = scannerFor("application/octet-stream", 8);
    expect(scanner.push(Buffer.from("ab"))).toEqual({ generated: 0, firstToken: true });
    expect(scanner.push(Buffer.from("cd"))).toEqual({ generated: 0 });
  });

  it("does not keep a JSON response larger than the limit", () => {
    const scanner = scannerFor("application/json", 8);
    scanner.push(Buffer.from('{"usage": {"prompt_tokens": 1, "completion_tokens": 1}}'));
    expect(scanner.end()).toEqual({ generated: 0 });
  });

  describe("first token in streams shaped like the engine simulator's", () => {
    /** One SSE event (or comment) and whether it carries generated output. */
    type Piece = { text: string; output: boolean };
    const data = (value: unknown): string => `data: ${JSON.stringify(value)}`;
    const chunk = (delta: unknown) => ({ id: "chatcmpl-1", object: "chat.completion.chunk", choices: [{ index: 0, delta, finish_reason: null }] });
    const silent: fc.Arbitrary<Piece>[] = [
      fc.constant({ text: data(chunk({ role: "assistant", content: "" })), output: false }),
      fc.constant({ text: ": keep-alive", output: false }),
      fc.constant({ text: data(chunk({ content: "" })), output: false }),
      fc.constant({ text: data({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 0 } }), output: false }),
    ];
    const loud: fc.Arbitrary<Piece>[] = [
      fc.string({ unit: "grapheme", minLength: 1, maxLength: 6 }).map((t) => ({ text: data(chunk({ content: t })), output: true })),
      fc.constantFrom("Héllo", " 世界", "🙂").map((t) => ({ text: data(chunk({ reasoning_content: t })), output: true })),
      fc.constant({ text: data(chunk({ tool_calls: [{ index: 0, function: { arguments: '{"city": "巴黎"}' } }] })), output: true }),
      fc.constantFrom("once", " upon").map((t) => ({ text: data({ object: "text_completion", choices: [{ index: 0, text: t }] }), output: true })),
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
          if (done) all.push({ text: "data: [DONE]", output: false });
          const texts = all.map((piece) => Buffer.from(piece.text + eol + eol));
          const body = Buffer.concat(texts);
          const firstEvent = all.findIndex((piece) => piece.output);
          // The event is complete at the last byte of its blank line: that byte's chunk must fire.
          const firesAtByte = firstEvent < 0 ? -1 : texts.slice(0, firstEvent + 1).reduce((sum, t) => sum + t.length, 0) - 1;
          const cuts = [...new Set(fractions.map((f) => Math.floor(f * body.length)))].sort((a, b) => a - b);
          const points = [...new Set([0, ...cuts, body.length])];
          const chunks = points.slice(1).map((end, i) => body.subarray(points[i], end));
          const { total, firstAt } = scanWithFirst(chunks);
          expect(total.generated).toBe(all.filter((piece) => piece.output).length);
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
