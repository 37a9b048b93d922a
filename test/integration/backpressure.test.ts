import { createHash } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { credentials, type ClientDuplexStream } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProcessingMode_BodySendMode } from "../../src/gen/envoy/extensions/filters/http/ext_proc/v3/processing_mode.js";
import {
  ExternalProcessorClient,
  ProcessingRequest,
  type ProcessingResponse,
} from "../../src/gen/envoy/service/ext_proc/v3/external_processor.js";
import { idle, startTestSidecar, totalLoad } from "../support/sidecar.js";
import { chat } from "./harness.js";

/**
 * Envoy stops reading the ext_proc stream when its downstream client reads slowly; HTTP/2 flow
 * control must then reach back to Envoy's writes instead of the sidecar reading on and keeping
 * every echo in memory. The client here is Envoy with a stalled downstream: it writes response
 * chunks as fast as its stream lets it and reads nothing, then reads again.
 */
let sidecar: Awaited<ReturnType<typeof startTestSidecar>>;
beforeAll(async () => {
  sidecar = await startTestSidecar([{ name: "llama", models: ["llama"], endpoints: ["127.0.0.1:1"] }]);
});
afterAll(() => sidecar.stop(0));

const CHUNK_BYTES = 60_000;
const CHUNKS = 1_100; // ~63 MiB of response body
/** Whatever the sidecar, both HTTP/2 stacks and the kernel's socket buffers may hold between them. */
const IN_FLIGHT_BOUND = 16 << 20;

const header = (key: string, value: string) => ({ key, value: "", rawValue: Buffer.from(value) });

/** Chunk `index`: its number, then a pattern depending on it, so a lost, doubled or swapped chunk shows. */
function chunk(index: number): Buffer {
  const body = Buffer.alloc(CHUNK_BYTES, index % 251);
  body.writeUInt32BE(index, 0);
  return body;
}

/** Resolves with the next message from the sidecar. */
function next(call: ClientDuplexStream<ProcessingRequest, ProcessingResponse>): Promise<ProcessingResponse> {
  return new Promise((resolve, reject) => {
    const onData = (message: ProcessingResponse): void => {
      call.off("error", reject);
      call.pause();
      resolve(message);
    };
    call.once("data", onData);
    call.once("error", reject);
    call.resume();
  });
}

describe("a slow reader on the ext_proc stream", () => {
  it("holds the sidecar back instead of buffering its echoes, and then gets every byte in order", async () => {
    const client = new ExternalProcessorClient(`127.0.0.1:${sidecar.ports.extproc}`, credentials.createInsecure());
    const call = client.process();
    call.pause();
    try {
      const prompt = chat("llama", "tell me a long story");
      call.write(
        ProcessingRequest.fromPartial({
          protocolConfig: {
            requestBodyMode: ProcessingMode_BodySendMode.FULL_DUPLEX_STREAMED,
            responseBodyMode: ProcessingMode_BodySendMode.FULL_DUPLEX_STREAMED,
          },
          requestHeaders: {
            headers: {
              headers: [
                header(":method", "POST"),
                header(":path", "/v1/chat/completions"),
                header(":authority", "gateway"),
                header(":scheme", "http"),
                header("content-type", "application/json"),
                header("x-request-id", "slow-reader"),
              ],
            },
          },
        }),
      );
      call.write(ProcessingRequest.fromPartial({ requestBody: { body: Buffer.from(prompt), endOfStream: true } }));
      const routed = await next(call);
      expect(routed.requestHeaders?.response?.headerMutation?.setHeaders.map((option) => option.header?.key)).toContain(
        "x-gateway-destination-endpoint",
      );
      expect((await next(call)).requestBody?.response?.bodyMutation?.streamedResponse?.endOfStream).toBe(true);
      call.write(
        ProcessingRequest.fromPartial({
          responseHeaders: { headers: { headers: [header(":status", "200"), header("content-type", "application/octet-stream")] } },
        }),
      );
      expect((await next(call)).responseHeaders).toBeDefined();

      // Write as fast as the stream takes it, reading nothing.
      let written = 0;
      let sentBytes = 0;
      const writing = (async () => {
        while (written < CHUNKS) {
          const index = written;
          written += 1;
          const message = ProcessingRequest.fromPartial({ responseBody: { body: chunk(index), endOfStream: index === CHUNKS - 1 } });
          const more = call.write(message, () => (sentBytes += CHUNK_BYTES));
          if (!more) await new Promise((resolve) => call.once("drain", resolve));
        }
      })();
      // Until nothing moves for half a second: the bytes sent are all that is held on the way.
      let last = -1;
      while (sentBytes !== last) {
        last = sentBytes;
        await delay(500);
      }
      expect(sentBytes).toBeLessThan(IN_FLIGHT_BOUND);
      expect(written).toBeLessThan(CHUNKS);

      // Read again: every chunk comes back, in order, the last with end of stream.
      const received = createHash("sha256");
      const expected = createHash("sha256");
      for (let index = 0; index < CHUNKS; index++) expected.update(chunk(index));
      let receivedBytes = 0;
      let endOfStream = false;
      const reading = new Promise<void>((resolve, reject) => {
        call.on("data", (message: ProcessingResponse) => {
          const streamed = message.responseBody?.response?.bodyMutation?.streamedResponse;
          if (streamed === undefined) return reject(new Error(`unexpected reply ${JSON.stringify(Object.keys(message))}`));
          received.update(streamed.body);
          receivedBytes += streamed.body.length;
          if (streamed.endOfStream) {
            endOfStream = true;
            resolve();
          }
        });
        call.once("error", reject);
      });
      call.resume();
      await writing;
      await reading;
      expect(receivedBytes).toBe(CHUNKS * CHUNK_BYTES);
      expect(endOfStream).toBe(true);
      expect(received.digest("hex")).toBe(expected.digest("hex"));
      call.end();
    } finally {
      call.on("error", () => undefined);
      call.cancel();
      client.close();
    }
    await expect.poll(() => totalLoad(sidecar)).toEqual(idle);
  }, 60_000);
});
