import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FAULT_HEADER } from "../engine-sim/engine.js";
import type { ResetPoint } from "../envoy/ext-proc-client.js";
import { idle, totalLoad } from "../support/sidecar.js";
import { chat, chatRequest, startRig, type Rig } from "./harness.js";

let rig: Rig;
beforeAll(async () => {
  rig = await startRig({ engines: 3, engine: { model: { stepBaseMs: 2 } } });
});
afterAll(() => rig.close());

const exchangeArb = fc.record({
  body: fc.constantFrom("chat", "stream", "malformed", "unknown-model"),
  promptWords: fc.integer({ min: 1, max: 400 }),
  fault: fc.constantFrom("", "", "", "status=500", "reset-after=2", "error-after=1", "hang"),
  reset: fc.option(
    fc.constantFrom<ResetPoint["at"]>("request-headers", "request-body", "request-complete", "routed", "response-headers", "response-body"),
    { nil: undefined },
  ),
  seed: fc.nat(),
  ending: fc.constantFrom("eos-on-last" as const, "empty-eos" as const),
  buffered: fc.boolean(),
  startDelayMs: fc.integer({ min: 0, max: 20 }),
  abortAfterMs: fc.integer({ min: 5, max: 60 }),
});

function bodyOf(kind: string, words: number): string {
  const prompt = "word ".repeat(words);
  if (kind === "malformed") return `{"model": "llama", "messages": [${prompt}`;
  return chat(kind === "unknown-model" ? "nobody-serves-this" : "llama", prompt, kind === "stream" ? { stream: true } : {});
}

describe("random interleavings of many exchanges over real sockets", () => {
  it("keeps the counters consistent while they run and ends with every counter at zero", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(exchangeArb, { minLength: 1, maxLength: 25 }), async (specs) => {
        let running = true;
        const samples: Awaited<ReturnType<typeof totalLoad>>[] = [];
        const sampler = (async () => {
          while (running) {
            samples.push(await totalLoad(rig.sidecar));
            await new Promise((resolve) => setTimeout(resolve, 3));
          }
        })();
        await Promise.all(
          specs.map(async (spec) => {
            await new Promise((resolve) => setTimeout(resolve, spec.startDelayMs));
            // A hanging engine is left by the client, as a user would give up.
            const signal = spec.fault === "hang" ? AbortSignal.timeout(spec.abortAfterMs) : undefined;
            const headers: Record<string, string> = spec.fault ? { [FAULT_HEADER]: spec.fault } : {};
            await rig.exchange({
              request: chatRequest(bodyOf(spec.body, spec.promptWords), headers),
              chunking: { random: { seed: spec.seed, maxChunk: 64 } },
              ending: spec.ending,
              reset: spec.reset === undefined ? undefined : (at) => at.at === spec.reset,
              config: spec.buffered ? { requestBodyMode: "BUFFERED" } : undefined,
              signal,
              timeoutMs: 5000,
            });
          }),
        );
        running = false;
        await sampler;
        for (const sample of samples) {
          expect(sample.requests).toBe(sample.ledger);
          expect(sample.prefillRequests).toBeGreaterThanOrEqual(0);
          expect(sample.prefillRequests).toBeLessThanOrEqual(sample.requests);
          expect(sample.prefillTokens).toBeGreaterThanOrEqual(0);
          expect(sample.tokensHeld).toBeGreaterThanOrEqual(sample.prefillTokens);
        }
        await expect.poll(() => totalLoad(rig.sidecar), { timeout: 5000 }).toEqual(idle);
      }),
      { numRuns: 15 },
    );
  }, 120_000);
});
