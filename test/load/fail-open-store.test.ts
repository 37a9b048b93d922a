import { afterEach, describe, expect, it } from "vitest";
import { FailOpenStore } from "../../src/load/fail-open-store.js";
import type { LoadStore } from "../../src/load/store.js";
import { FaultyStore } from "../support/faulty-store.js";
import { pickOf } from "./ledger-property.js";

/** A shared store standing in for Redis: a memory store whose calls (and ping) fail as told. */
function sharedStore() {
  let out = false;
  const faulty = new FaultyStore(() => (out ? "hang" : undefined));
  const calls: string[] = [];
  const counting = new Proxy(faulty.store, {
    get(target, name: string) {
      const value = (target as unknown as Record<string, unknown>)[name];
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        calls.push(name);
        return (value as (...a: unknown[]) => unknown)(...args);
      };
    },
  }) as LoadStore;
  const shared = Object.assign(counting, {
    ping: () => (out ? new Promise<never>(() => undefined) : Promise.resolve("PONG")),
    // Counted by the proxy, as every call.
    async addGeneratedMany(batch: ReadonlyArray<readonly [string, number]>) {
      for (const [id, tokens] of batch) await faulty.store.addGenerated(id, tokens);
    },
  });
  return {
    shared,
    inner: faulty.inner,
    calls,
    setOut(value: boolean) {
      out = value;
    },
  };
}

const stores: FailOpenStore[] = [];
afterEach(() => {
  for (const store of stores.splice(0)) store.close();
});

function failOpen(shared: ReturnType<typeof sharedStore>["shared"], transitions: Array<boolean> = []) {
  const store = new FailOpenStore(shared, { timeoutMs: 30, coalesceMs: 100, retryMs: 50, onFallback: (local) => transitions.push(local) });
  stores.push(store);
  return store;
}

describe("FailOpenStore", () => {
  it("picks from its own view once the shared store is late, within the timeout, and reports the transition once", async () => {
    const remote = sharedStore();
    const transitions: boolean[] = [];
    const store = failOpen(remote.shared, transitions);
    expect((await store.pickAndReserve(pickOf("a", 10))).kind).toBe("reserved");
    remote.setOut(true);
    const started = performance.now();
    const late = await store.pickAndReserve(pickOf("b", 10));
    expect(late.kind).toBe("reserved");
    expect(performance.now() - started).toBeLessThan(1000);
    expect((await store.pickAndReserve(pickOf("c", 10))).kind).toBe("reserved");
    expect(transitions).toEqual([true]);
    expect(store.fallback).toBe(true);
    // Its own view: the two local reservations, plus nothing it cannot read.
    expect(await store.size()).toBe(2);
  });

  it("releases a local reservation locally and a shared one in the shared store once it is back: nothing counted twice", async () => {
    const remote = sharedStore();
    const transitions: boolean[] = [];
    const store = failOpen(remote.shared, transitions);
    await store.pickAndReserve(pickOf("shared", 10));
    remote.setOut(true);
    await store.pickAndReserve(pickOf("local", 10));
    expect(await store.release("local", "ok")).toBe(true);
    expect(await store.release("shared", "ok")).toBe(true);
    expect(remote.inner.size()).toBe(1);
    remote.setOut(false);
    await expect.poll(() => transitions).toEqual([true, false]);
    await expect.poll(() => remote.inner.size()).toBe(0);
    expect(await store.size()).toBe(0);
    expect((await store.pickAndReserve(pickOf("next", 10))).kind).toBe("reserved");
    expect(remote.inner.has("next")).toBe(true);
  });

  it("sends the engine's latest usage at most once per interval, and none that the release overtakes", async () => {
    const remote = sharedStore();
    const store = failOpen(remote.shared);
    const picked = await store.pickAndReserve(pickOf("a", 10));
    const engine = picked.kind === "reserved" ? picked.reservation.engine : "";
    // Usage in every chunk (vLLM's continuous usage stats), tokens between.
    for (let i = 1; i <= 30; i++) {
      await store.addGenerated("a", 1);
      await store.reconcile("a", { promptTokens: 12, completionTokens: i });
    }
    await store.addGenerated("a", 2);
    expect(remote.calls.filter((call) => call === "reconcile")).toHaveLength(0);
    await expect.poll(() => remote.inner.loads([]).get(engine)?.tokensHeld, { timeout: 1000 }).toBe(12 + 30 + 2);
    expect(remote.calls.filter((call) => call === "reconcile")).toHaveLength(1);
    await store.reconcile("a", { promptTokens: 12, completionTokens: 40 });
    await store.release("a", "ok");
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(remote.calls.filter((call) => call === "reconcile")).toHaveLength(1);
    expect(remote.inner.size()).toBe(0);
  });

  it("spreads the open exchanges' token updates over the interval, many per call, instead of one burst of a call each", async () => {
    const remote = sharedStore();
    const store = failOpen(remote.shared);
    for (let i = 0; i < 100; i++) await store.pickAndReserve(pickOf(`e${i}`, 10));
    for (let i = 0; i < 100; i++) await store.addGenerated(`e${i}`, 3);
    const held = () => [...remote.inner.loads([]).values()].reduce((sum, load) => sum + load.tokensHeld, 0);
    await expect.poll(held, { timeout: 2000 }).toBe(100 * (10 + 3));
    // Ten slots of ten exchanges, each slot sent once.
    expect(remote.calls.filter((call) => call === "addGeneratedMany")).toHaveLength(10);
  });

  it("sends an exchange's generated tokens at most once per interval, and drops what a release makes moot", async () => {
    const remote = sharedStore();
    const store = failOpen(remote.shared);
    const picked = await store.pickAndReserve(pickOf("a", 10));
    const engine = picked.kind === "reserved" ? picked.reservation.engine : "";
    for (let i = 0; i < 50; i++) await store.addGenerated("a", 2);
    expect(remote.calls.filter((call) => call === "addGeneratedMany")).toHaveLength(0);
    await expect.poll(() => remote.calls.filter((call) => call === "addGeneratedMany").length, { timeout: 1000 }).toBe(1);
    expect(remote.inner.loads([]).get(engine)?.tokensHeld).toBe(110);
    for (let i = 0; i < 5; i++) await store.addGenerated("a", 1);
    await store.release("a", "ok");
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(remote.calls.filter((call) => call === "addGeneratedMany")).toHaveLength(1);
    expect(remote.inner.size()).toBe(0);
  });
});
