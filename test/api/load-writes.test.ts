import { describe, expect, it } from "vitest";
import { EarlyDeletes } from "../../src/api/early-deletes.js";
import { LoadWrites, ledgerId } from "../../src/api/load-writes.js";
import { MemoryLoadStore } from "../../src/load/memory-store.js";
import { PoolDirectory } from "../../src/pools/pools.js";

const directory = new PoolDirectory([{ name: "alpha", models: ["a"], endpoints: ["10.0.0.1:8000"] }]);
const setup = (waitMs = 60_000) => {
  const store = new MemoryLoadStore();
  return { store, writes: new LoadWrites(store, () => directory, { waitMs, capacity: 2 }) };
};
const add = { cluster: "alpha", request_id: "r1", prompt_length: 40, ip: "10.0.0.1" };

describe("LoadWrites: a delete that arrives before its add", () => {
  it("DELETE stats first: the add is applied and ended at once, and the delete answers OK", async () => {
    const { store, writes } = setup();
    const early = writes.deleteStats({ request_id: "r1" });
    await Promise.resolve();
    expect(await writes.add(add)).toEqual({ ok: true });
    expect(await early).toEqual({ ok: true });
    expect(store.size()).toBe(0);
    expect(store.loads([]).get("10.0.0.1:8000")).toMatchObject({ requests: 0, prefillTokens: 0, tokensHeld: 0 });
  });

  it("DELETE prompt first: the request stays in flight without its prompt", async () => {
    const { store, writes } = setup();
    const early = writes.deletePrompt({ request_id: "r1" });
    await Promise.resolve();
    await writes.add(add);
    expect(await early).toEqual({ ok: true });
    expect(store.has(ledgerId("r1"))).toBe(true);
    expect(store.loads([]).get("10.0.0.1:8000")).toMatchObject({ requests: 1, prefillRequests: 0, prefillTokens: 0, tokensHeld: 40 });
    expect(await writes.deleteStats({ request_id: "r1" })).toEqual({ ok: true });
    expect(store.size()).toBe(0);
  });

  it("both deletes first: the request ends once", async () => {
    const { store, writes } = setup();
    const prompt = writes.deletePrompt({ request_id: "r1" });
    const stats = writes.deleteStats({ request_id: "r1" });
    await Promise.resolve();
    await writes.add(add);
    expect([await prompt, await stats]).toEqual([{ ok: true }, { ok: true }]);
    expect(store.loads([]).get("10.0.0.1:8000")).toMatchObject({ requests: 0, prefillRequests: 0, prefillTokens: 0, tokensHeld: 0 });
  });

  it("without an add within the wait, the delete answers 404 and a later add is counted", async () => {
    const { store, writes } = setup(5);
    expect(await writes.deleteStats({ request_id: "r1" })).toMatchObject({ ok: false, status: 404, error: { code: 40001404 } });
    await writes.add(add);
    expect(store.size()).toBe(1);
    expect(await writes.deleteStats({ request_id: "r1" })).toEqual({ ok: true });
  });

  it("close() answers every waiting delete as not applied", async () => {
    const { writes } = setup();
    const early = writes.deleteStats({ request_id: "r1" });
    await Promise.resolve();
    writes.close();
    expect(await early).toMatchObject({ ok: false, status: 404 });
  });
});

describe("EarlyDeletes", () => {
  it("holds at most `capacity` ids; beyond that a delete is answered as not applied at once", async () => {
    const early = new EarlyDeletes(60_000, 2);
    const held = [early.wait("a", "stats"), early.wait("b", "prompt")];
    expect(await early.wait("c", "stats")).toBe(false);
    expect(early.size).toBe(2);
    // A second delete for an id already waiting does not take another slot.
    const again = early.wait("a", "prompt");
    expect(early.size).toBe(2);
    const taken = early.take("a");
    expect(taken).toMatchObject({ prompt: true, stats: true });
    taken?.settle();
    early.close();
    expect(await Promise.all([...held, again])).toEqual([true, false, true]);
  });
});
