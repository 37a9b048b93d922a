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
  const scanner = scannerFor("text/event-stream; charset=utf-8", 1 << 20);
  const total: ResponseProgress = { generated: 0 };
  for (const progress of [...chunks.map((chunk) => scanner.push(chunk)), scanner.end()]) {
    total.generated += progress.generated;
    if (progress.usage) total.usage = progress.usage;
    if (progress.error) total.error = progress.error;
  }
  return total;
}

describe("response scanning", () => {
  it("counts events that carry output and reads the usage chunk", () => {
    expect(scan([stream])).toEqual({ generated: 3, usage: { promptTokens: 12, completionTokens: 3 } });
  });

  it("gives the same answer wherever the stream is split, even inside a UTF-8 character", () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: stream.length - 1 }), { maxLength: 40 }), (cuts) => {
        const points = [0, ...cuts.sort((a, b) => a - b), stream.length];
        const chunks = points.slice(1).map((end, i) => stream.subarray(points[i], end));
        expect(scan(chunks)).toEqual({ generated: 3, usage: { promptTokens: 12, completionTokens: 3 } });
      }),
    );
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
    expect(scanner.push(body.subarray(0, 10))).toEqual({ generated: 0 });
    expect(scanner.push(body.subarray(10))).toEqual({ generated: 0 });
    expect(scanner.end()).toEqual({ generated: 0, usage: { promptTokens: 5, completionTokens: 2 } });
  });

  it("does not keep a JSON response larger than the limit", () => {
    const scanner = scannerFor("application/json", 8);
    scanner.push(Buffer.from('{"usage": {"prompt_tokens": 1, "completion_tokens": 1}}'));
    expect(scanner.end()).toEqual({ generated: 0 });
  });
});
