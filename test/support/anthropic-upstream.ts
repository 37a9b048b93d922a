// A small engine that speaks the Anthropic Messages API over real HTTP: POST /v1/messages, streamed
// as Anthropic streams (message_start with the prompt's usage, content blocks, message_delta with the
// output's, message_stop) or answered as one JSON message. Each stream can be held at three points
// so a test sees the sidecar's counters between them.
import http from "node:http";
import type { AddressInfo } from "node:net";

/** What the engine reports in usage: the prompt in Anthropic's three parts, and the output. */
export interface MessagesUsage {
  input_tokens: number;
  cache_creation_input_tokens: number;
  cache_read_input_tokens: number;
  output_tokens: number;
}

/** Where a stream waits, if the test gives it something to wait on. */
export interface StreamHolds {
  /** Before message_start (response headers are sent at once). */
  beforeStart?: Promise<void>;
  /** After message_start and a ping, before the first content_block_delta. */
  beforeFirstDelta?: Promise<void>;
  /** After the first delta, before the rest of the output, message_delta and message_stop. */
  beforeRest?: Promise<void>;
}

export interface AnthropicUpstream {
  /** `127.0.0.1:port`, for a pool's endpoints. */
  address: string;
  /** Bodies received, in order. */
  received: Array<Record<string, unknown>>;
  /** Holds for the next stream (each stream takes the holds set when it arrives). */
  hold(holds: StreamHolds): void;
  close(): Promise<void>;
}

const sse = (data: { type: string } & Record<string, unknown>): string => `event: ${data.type}\ndata: ${JSON.stringify(data)}\n\n`;

/** The output the engine generates, as text deltas; the first is sent alone. */
export const GENERATED = ["Bonjour", " from", " the", " harbour", "."];

export async function startAnthropicUpstream(usage: MessagesUsage): Promise<AnthropicUpstream> {
  const received: Array<Record<string, unknown>> = [];
  let holds: StreamHolds = {};
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>;
      received.push(body);
      const message = { id: `msg_${received.length}`, type: "message", role: "assistant", model: body["model"], stop_sequence: null };
      if (body["stream"] !== true) {
        response.writeHead(200, { "content-type": "application/json" });
        response.end(JSON.stringify({ ...message, content: [{ type: "text", text: GENERATED.join("") }], stop_reason: "end_turn", usage }));
        return;
      }
      const held = holds;
      holds = {};
      void stream(response, message, held);
    });
  });

  async function stream(response: http.ServerResponse, message: Record<string, unknown>, held: StreamHolds): Promise<void> {
    response.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    response.flushHeaders();
    await held.beforeStart;
    response.write(sse({ type: "message_start", message: { ...message, content: [], stop_reason: null, usage: { ...usage, output_tokens: 1 } } }));
    response.write(sse({ type: "content_block_start", index: 0, content_block: { type: "text", text: "" } }));
    response.write(sse({ type: "ping" }));
    await held.beforeFirstDelta;
    response.write(sse({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text: GENERATED[0]! } }));
    await held.beforeRest;
    for (const text of GENERATED.slice(1)) response.write(sse({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text } }));
    response.write(sse({ type: "content_block_stop", index: 0 }));
    response.write(sse({ type: "message_delta", delta: { stop_reason: "end_turn", stop_sequence: null }, usage: { output_tokens: usage.output_tokens } }));
    response.end(sse({ type: "message_stop" }));
  }

  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    received,
    hold: (next) => (holds = next),
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
