import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { STREAMS_PER_CONNECTION } from "../../src/extproc/connection-rotation.js";
import { EnvoyExtProcClient } from "../envoy/ext-proc-client.js";
import { idle, LogCapture, startTestSidecar, totalLoad } from "../support/sidecar.js";
import { chat, chatRequest } from "./harness.js";
import { sseEngine } from "../support/upstreams.js";

/**
 * Envoy resets every ext_proc stream when done; Node's HTTP/2 server kills a connection after
 * ~1,000 resets arriving faster than 33/s. Thousands of exchanges on one channel at full speed
 * must all succeed: the sidecar retires connections before that.
 */
let sidecar: Awaited<ReturnType<typeof startTestSidecar>>;
const capture = new LogCapture();
beforeAll(async () => {
  sidecar = await startTestSidecar([{ name: "llama", models: ["llama"], endpoints: ["127.0.0.1:1", "127.0.0.1:2"] }], {}, capture);
});
// Every retirement went by the shutdown notice, never by nghttp2's own GOAWAY (see connection-rotation.ts).
afterEach(() => expect(capture.lines.filter((line) => line["level"] === 40).map((line) => line["msg"])).toEqual([]));
afterAll(() => sidecar.stop(0));

const quickEngine = sseEngine();

describe("many exchanges on one connection", () => {
  it("2,500 back-to-back exchanges through one channel all succeed, and every counter ends at zero", async () => {
    const client = new EnvoyExtProcClient(`127.0.0.1:${sidecar.ports.extproc}`);
    const failures: string[] = [];
    let next = 0;
    try {
      await Promise.all(
        Array.from({ length: 32 }, async () => {
          while (next < 2500) {
            next += 1;
            const result = await client.exchange({ request: chatRequest(chat("llama", "quick", { stream: true })), upstream: quickEngine });
            if (result.status !== 200 || result.failure) failures.push(`${result.status} ${JSON.stringify(result.failure)}`);
          }
        }),
      );
    } finally {
      client.close();
    }
    expect(failures.slice(0, 3)).toEqual([]);
    expect(failures).toHaveLength(0);
    await expect.poll(() => totalLoad(sidecar)).toEqual(idle);
  }, 120_000);

  it(`5,000 exchanges opened at once on one connection, straddling its retirement at ${STREAMS_PER_CONNECTION}, are all routed`, async () => {
    const client = new EnvoyExtProcClient(`127.0.0.1:${sidecar.ports.extproc}`);
    try {
      const results = await Promise.all(
        Array.from({ length: 5000 }, () =>
          client.exchange({ request: chatRequest(chat("llama", "at once", { stream: true })), upstream: quickEngine, timeoutMs: 60_000 }),
        ),
      );
      const failed = results.filter((result) => result.status !== 200 || result.failure !== undefined);
      expect(failed.slice(0, 3).map((result) => `${result.status} ${JSON.stringify(result.failure)}`)).toEqual([]);
      expect(results.filter((result) => result.routedTo !== undefined)).toHaveLength(5000);
    } finally {
      client.close();
    }
    await expect.poll(() => totalLoad(sidecar)).toEqual(idle);
  }, 120_000);
});

