import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { ExtProcExchange } from "../../src/extproc/exchange.js";
import { HeldBodies } from "../../src/extproc/held-bodies.js";
import type { BodyMode } from "../../src/protocol.js";
import { ProcessingRequest, type ProcessingResponse } from "../../src/gen/envoy/service/ext_proc/v3/external_processor.js";
import { InferenceExchange } from "../../src/inference/lifecycle.js";
import { RequestParser } from "../../src/inference/request-parser.js";
import { TokenizerRegistry } from "../../src/inference/tokenizers/registry.js";
import { MemoryLoadStore } from "../../src/load/memory-store.js";
import type { Awaitable, LoadStore } from "../../src/load/store.js";
import { PoolDirectory } from "../../src/pools/pools.js";
import { Picker } from "../../src/scheduling/picker.js";
import { lifecycleContext } from "../support/lifecycle-context.js";
import { schedulingDefaults } from "../support/scheduling.js";

const ENGINE = "10.0.0.1:8000";
const directory = new PoolDirectory([{ name: "llama", models: ["llama"], endpoints: [ENGINE] }]);
const body = Buffer.from(JSON.stringify({ model: "llama", stream: true, messages: [{ role: "user", content: "hello" }] }));

describe("an ext_proc exchange's pick", () => {
  const tokens = new TokenizerRegistry({ countWholeUpTo: 16_384, imageTokens: 765, audioTokens: 200 }, () => directory, (error) => {
    throw error;
  });
  const parser = new RequestParser({ offThreadAboveBytes: Number.MAX_SAFE_INTEGER, wholeUpToCost: () => 16_384, includeUsage: false, lost: (error) => {
    throw error;
  } });
  afterAll(() => Promise.all([tokens.close(), parser.close()]));

  const routedTo = (reply: ProcessingResponse | undefined) =>
    (reply?.requestBody ?? reply?.requestHeaders)?.response?.headerMutation?.setHeaders.find((header) => header.header?.key === "x-gateway-destination-endpoint")?.header?.rawValue.toString();

  function exchange(store: LoadStore, request: BodyMode = "BUFFERED") {
    const inference = new InferenceExchange(lifecycleContext({ store, picker: new Picker(store, () => directory, schedulingDefaults), parser, tokens }), "x1");
    const replies: string[] = [];
    const routes: Array<string | undefined> = [];
    const transport = new ExtProcExchange(
      {
        write: (reply) => {
          replies.push(reply.requestHeaders !== undefined ? "request headers" : reply.requestBody !== undefined ? "request body" : "other");
          routes.push(routedTo(reply));
        },
        abort: (code, message) => replies.push(`aborted ${code} ${message}`),
      },
      inference,
      {
        assumedModes: { request, response: "STREAMED" },
        maxRequestBodyBytes: 1 << 20,
        requestBodyTimeoutMs: 0,
        observer: false,
        trustedHeaders: new Set(),
        heldBodies: new HeldBodies(1 << 20),
      },
      pino({ level: "silent" }),
    );
    const headers = [
      [":path", "/v1/chat/completions"],
      [":method", "POST"],
    ].map(([key, value]) => ({ key: key!, value: "", rawValue: Buffer.from(value!) }));
    transport.onMessage(ProcessingRequest.fromPartial({ requestHeaders: { headers: { headers }, endOfStream: false } }));
    return { transport, replies, routes };
  }

  it("routes before the transport's next message when the store answers at once, and after the answer when it does not", async () => {
    const memory = new MemoryLoadStore();
    const now = exchange(memory);
    now.transport.onMessage(ProcessingRequest.fromPartial({ requestBody: { body, endOfStream: true } }));
    // No await: the reply to the body was written while its message was handled.
    expect(now.replies).toEqual(["request headers", "request body"]);
    expect(now.routes[1]).toBe(ENGINE);

    // A store that answers later (a network store): the reply waits for it, and nothing else does.
    let answer: (() => void) | undefined;
    const later = new Proxy(new MemoryLoadStore(), {
      get(target, name, receiver) {
        const value = Reflect.get(target, name, receiver) as unknown;
        if (name !== "pickAndReserve" || typeof value !== "function") return value;
        return (...args: unknown[]): Awaitable<unknown> => new Promise((resolve) => (answer = () => resolve((value as (...a: unknown[]) => unknown).apply(target, args))));
      },
    });
    const waiting = exchange(later);
    waiting.transport.onMessage(ProcessingRequest.fromPartial({ requestBody: { body, endOfStream: true } }));
    expect(waiting.replies).toEqual(["request headers"]);
    answer?.();
    await new Promise((resolve) => setImmediate(resolve));
    expect(waiting.replies).toEqual(["request headers", "request body"]);
    expect(waiting.routes[1]).toBe(ENGINE);
  });

  it("FULL_DUPLEX_STREAMED: routes and echoes the held body while its last chunk's message is handled", () => {
    const duplex = exchange(new MemoryLoadStore(), "FULL_DUPLEX_STREAMED");
    const half = Math.floor(body.length / 2);
    duplex.transport.onMessage(ProcessingRequest.fromPartial({ requestBody: { body: body.subarray(0, half), endOfStream: false } }));
    expect(duplex.replies).toEqual([]);
    duplex.transport.onMessage(ProcessingRequest.fromPartial({ requestBody: { body: body.subarray(half), endOfStream: true } }));
    expect(duplex.replies).toEqual(["request headers", "request body"]);
    expect(duplex.routes[0]).toBe(ENGINE);
  });
});
