import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chatRequest, startRig, type Rig } from "./harness.js";

// Prefix affinity over the real ext_proc path: the prompt's blocks hashed from the parsed body,
// the engine that served them preferred while loads are even.

const system = "You are a careful assistant for a logistics company. ".repeat(40);
const ask = (question: string): string =>
  JSON.stringify({ model: "llama", messages: [{ role: "system", content: system }, { role: "user", content: question }] });

describe("prefix affinity through the sidecar", () => {
  let rig: Rig;
  beforeAll(async () => {
    rig = await startRig({ engines: 4, sidecar: { scheduling: { scorers: { prefix: 0.9 } } } });
  });
  afterAll(() => rig.close());

  it("sends requests that share a long system prompt to the engine that served it, one after another", async () => {
    const first = await rig.exchange({ request: chatRequest(ask("Where is parcel 1?")) });
    expect(first.status).toBe(200);
    for (let i = 2; i <= 8; i++) {
      const next = await rig.exchange({ request: chatRequest(ask(`Where is parcel ${i}?`)) });
      expect(next.routedTo).toBe(first.routedTo);
    }
    await rig.expectIdle();
  });

  it("spreads requests with nothing in common as before", async () => {
    const engines = new Set<string | undefined>();
    for (let i = 0; i < 24; i++) {
      const result = await rig.exchange({ request: chatRequest(JSON.stringify({ model: "llama", messages: [{ role: "user", content: `question ${i} `.repeat(20 + i) }] })) });
      engines.add(result.routedTo);
    }
    expect(engines.size).toBeGreaterThan(1);
    await rig.expectIdle();
  });
});
