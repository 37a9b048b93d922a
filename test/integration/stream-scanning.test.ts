// Response scanning over real sockets: the engine's bytes reach the sidecar in exactly the pieces
// an upstream sends (the Envoy-faithful client forwards each as one response body message), so
// the awkward boundaries below are the ones the sidecar sees.
import { countTokens } from "gpt-tokenizer/encoding/o200k_base";
import { afterEach, describe, expect, it } from "vitest";
import type { DownstreamObserver, ExchangeResult, Upstream } from "../envoy/ext-proc-client.js";
import { gate } from "../support/gate.js";
import { LogCapture, totalLoad } from "../support/sidecar.js";
import { chat, chatRequest, startRig, type Rig } from "./harness.js";

let rig: Rig | undefined;
afterEach(async () => {
  await rig?.expectIdle();
  await rig?.close();
  rig = undefined;
});

/** An engine answering with `pieces`, each after its gate opens (null: sent at once). */
function scriptedEngine(contentType: string, pieces: ReadonlyArray<{ bytes: Buffer; after: Promise<void> | null }>): Upstream {
  return async () => ({
    status: 200,
    headers: { "content-type": contentType },
    body: (async function* () {
      for (const piece of pieces) {
        if (piece.after !== null) await piece.after;
        yield piece.bytes;
      }
    })(),
  });
}

/** Counts what the client has received: once it holds a piece's bytes, the sidecar has processed that piece. */
function downstreamBytes(): { observer: DownstreamObserver; received: () => number } {
  let received = 0;
  return {
    observer: { onHeaders() {}, onData: (chunk) => (received += chunk.length), onTrailers() {}, onEnd() {}, onReset() {} },
    received: () => received,
  };
}

/** The response body pieces the sidecar was sent, in order. */
function responseChunksSent(result: ExchangeResult): Buffer[] {
  return result.log.flatMap((entry) => {
    const body = entry.direction === "sent" ? entry.message?.responseBody : undefined;
    return body !== undefined && "body" in body && body.body.length > 0 ? [Buffer.from(body.body)] : [];
  });
}

const requestLine = (capture: LogCapture, requestId: string) => capture.lines.filter((line) => line["requestId"] === requestId);

describe("first token and generated tokens, whatever the chunk boundaries", () => {
  it("a chat stream with \\r\\n line ends, a keep-alive, a role-only chunk, a split UTF-8 character and several events in one chunk", async () => {
    const capture = new LogCapture();
    rig = await startRig({ engines: 1, capture });
    const thinking = Buffer.from('data: {"choices":[{"index":0,"delta":{"content":"","reasoning_content":"思考"}}]}\r\n\r\n');
    // Cut inside the second byte of "考": neither the event nor the character is complete.
    const cut = thinking.indexOf(Buffer.from("考")) + 1;
    const gates = [gate(), gate(), gate()];
    const pieces = [
      { bytes: Buffer.from(": keep-alive\r\n\r\n"), after: null },
      { bytes: Buffer.from('data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\r\n\r\n'), after: null },
      { bytes: thinking.subarray(0, cut), after: gates[0]!.promise },
      {
        bytes: Buffer.concat([
          thinking.subarray(cut),
          Buffer.from('data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\r\n\r\n'),
          Buffer.from('data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"city\\""}}]}}]}\r\n\r\n'),
        ]),
        after: gates[1]!.promise,
      },
      {
        bytes: Buffer.from(
          'data: {"choices":[],"usage":{"prompt_tokens":40,"completion_tokens":7,"total_tokens":47,"prompt_tokens_details":{"cached_tokens":32}}}\r\n\r\ndata: [DONE]\r\n\r\n',
        ),
        after: gates[2]!.promise,
      },
    ];
    const sent = (count: number) => pieces.slice(0, count).reduce((sum, piece) => sum + piece.bytes.length, 0);
    const downstream = downstreamBytes();
    const pending = rig.exchange({
      request: chatRequest(chat("llama", "think before you answer", { stream: true }), { "x-request-id": "scan-chat" }),
      upstream: scriptedEngine("text/event-stream; charset=utf-8", pieces),
      downstream: downstream.observer,
    });

    await expect.poll(downstream.received).toBe(sent(2));
    const prefill = await totalLoad(rig.sidecar);
    expect(prefill).toMatchObject({ requests: 1, prefillRequests: 1 });
    expect(prefill.prefillTokens).toBeGreaterThan(0);

    gates[0]!.open();
    await expect.poll(downstream.received).toBe(sent(3));
    expect(await totalLoad(rig.sidecar)).toEqual(prefill);

    gates[1]!.open();
    await expect.poll(downstream.received).toBe(sent(4));
    // Reasoning, content and a tool-call delta: their tokens are held beside the prompt.
    const generated = countTokens("思考") + countTokens("Hi") + countTokens('{"city"');
    expect(await totalLoad(rig.sidecar)).toMatchObject({ requests: 1, prefillRequests: 0, prefillTokens: 0, tokensHeld: prefill.tokensHeld + generated });

    gates[2]!.open();
    const result = await pending;
    expect(result.status).toBe(200);
    expect(result.body).toEqual(Buffer.concat(pieces.map((piece) => piece.bytes)));
    expect(responseChunksSent(result)).toEqual(pieces.map((piece) => piece.bytes));
    await rig.expectIdle();
    await expect.poll(() => requestLine(capture, "scan-chat").length).toBe(1);
    expect(requestLine(capture, "scan-chat")[0]).toMatchObject({
      outcome: "ok",
      promptTokens: prefill.prefillTokens,
      reportedPromptTokens: 40,
      cachedTokens: 32,
      completionTokens: 7,
      ttftMs: expect.any(Number),
    });
  });

  it("a completions stream: empty text is not a first token, text is", async () => {
    rig = await startRig({ engines: 1 });
    const gates = [gate(), gate()];
    const pieces = [
      { bytes: Buffer.from('data: {"choices":[{"index":0,"text":""}]}\n\n'), after: null },
      { bytes: Buffer.from('data: {"choices":[{"index":0,"text":" once"}]}\n\n'), after: gates[0]!.promise },
      { bytes: Buffer.from('data: {"choices":[{"index":0,"text":" upon"}]}\n\ndata: [DONE]\n\n'), after: gates[1]!.promise },
    ];
    const downstream = downstreamBytes();
    const pending = rig.exchange({
      request: { method: "POST", path: "/v1/completions", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "llama", prompt: "once", stream: true }) },
      upstream: scriptedEngine("text/event-stream", pieces),
      downstream: downstream.observer,
    });
    await expect.poll(downstream.received).toBe(pieces[0]!.bytes.length);
    const prefill = await totalLoad(rig.sidecar);
    expect(prefill).toMatchObject({ requests: 1, prefillRequests: 1 });
    gates[0]!.open();
    await expect.poll(downstream.received).toBe(pieces[0]!.bytes.length + pieces[1]!.bytes.length);
    expect(await totalLoad(rig.sidecar)).toMatchObject({ requests: 1, prefillRequests: 0, prefillTokens: 0, tokensHeld: prefill.tokensHeld + countTokens(" once") });
    gates[1]!.open();
    expect((await pending).status).toBe(200);
  });

  it("a plain JSON response: the first body byte ends prefill; its usage reconciles at the end", async () => {
    const capture = new LogCapture();
    rig = await startRig({ engines: 1, capture });
    const body = Buffer.from(
      JSON.stringify({
        choices: [{ index: 0, message: { role: "assistant", content: "The answer is 42." }, finish_reason: "stop" }],
        usage: { prompt_tokens: 21, completion_tokens: 6, total_tokens: 27 },
      }),
    );
    const rest = gate();
    const pieces = [
      { bytes: body.subarray(0, 10), after: null },
      { bytes: body.subarray(10), after: rest.promise },
    ];
    const downstream = downstreamBytes();
    const pending = rig.exchange({
      request: chatRequest(chat("llama", "what is the answer?"), { "x-request-id": "scan-json" }),
      upstream: scriptedEngine("application/json", pieces),
      downstream: downstream.observer,
    });
    await expect.poll(downstream.received).toBe(10);
    const decoding = await totalLoad(rig.sidecar);
    expect(decoding).toMatchObject({ requests: 1, prefillRequests: 0, prefillTokens: 0 });
    rest.open();
    expect((await pending).status).toBe(200);
    await expect.poll(() => requestLine(capture, "scan-json").length).toBe(1);
    expect(requestLine(capture, "scan-json")[0]).toMatchObject({ outcome: "ok", reportedPromptTokens: 21, completionTokens: 6 });
  });

  it("a Responses API stream: prefill ends at the first output delta; the completed response's usage reconciles", async () => {
    const capture = new LogCapture();
    rig = await startRig({ engines: 1, capture });
    const next = gate();
    const event = (value: { type: string } & Record<string, unknown>): string => `event: ${value.type}\ndata: ${JSON.stringify(value)}\n\n`;
    const pieces = [
      { bytes: Buffer.from(event({ type: "response.created", response: { status: "in_progress" } }) + event({ type: "response.output_item.added", item: { type: "message" } })), after: null },
      { bytes: Buffer.from(event({ type: "response.output_text.delta", delta: "Hello" })), after: next.promise },
      {
        bytes: Buffer.from(event({ type: "response.completed", response: { status: "completed", usage: { input_tokens: 30, output_tokens: 2, input_tokens_details: { cached_tokens: 16 } } } })),
        after: null,
      },
    ];
    const downstream = downstreamBytes();
    const pending = rig.exchange({
      request: {
        method: "POST",
        path: "/v1/responses",
        headers: { "content-type": "application/json", "x-request-id": "scan-responses" },
        body: JSON.stringify({ model: "llama", input: "say hello", stream: true }),
      },
      upstream: scriptedEngine("text/event-stream", pieces),
      downstream: downstream.observer,
    });
    await expect.poll(downstream.received).toBe(pieces[0]!.bytes.length);
    expect(await totalLoad(rig.sidecar)).toMatchObject({ requests: 1, prefillRequests: 1 });
    next.open();
    expect((await pending).status).toBe(200);
    await expect.poll(() => requestLine(capture, "scan-responses").length).toBe(1);
    expect(requestLine(capture, "scan-responses")[0]).toMatchObject({ outcome: "ok", reportedPromptTokens: 30, cachedTokens: 16, completionTokens: 2, ttftMs: expect.any(Number) });
  });

  it("an error event inside a stream ends the request as failed at once, before the stream ends", async () => {
    const capture = new LogCapture();
    rig = await startRig({ engines: 1, capture });
    const close = gate();
    const pieces = [
      { bytes: Buffer.from('data: {"choices":[{"index":0,"delta":{"content":"partial"}}]}\n\n'), after: null },
      { bytes: Buffer.from('event: error\ndata: {"error":{"message":"out of KV cache","code":500}}\n\n'), after: null },
      { bytes: Buffer.from("data: [DONE]\n\n"), after: close.promise },
    ];
    const pending = rig.exchange({
      request: chatRequest(chat("llama", "fill the cache", { stream: true }), { "x-request-id": "scan-error" }),
      upstream: scriptedEngine("text/event-stream", pieces),
    });
    await expect.poll(() => requestLine(capture, "scan-error").length).toBe(1);
    expect(await totalLoad(rig.sidecar)).toMatchObject({ requests: 0, tokensHeld: 0 });
    expect(requestLine(capture, "scan-error")[0]).toMatchObject({ outcome: "upstream_error", status: 200 });
    close.open();
    const result = await pending;
    expect(result.body.toString()).toBe(pieces.map((piece) => piece.bytes.toString()).join(""));
  });
});
