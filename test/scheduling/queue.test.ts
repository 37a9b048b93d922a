import { afterEach, describe, expect, it } from "vitest";
import type { LoadStore } from "../../src/load/store.js";
import { PoolDirectory } from "../../src/pools/pools.js";
import { Picker } from "../../src/scheduling/picker.js";
import { PickQueue, type QueueRequest, type QueueSettings, type QueuedPickResult } from "../../src/scheduling/queue.js";
import { FaultyStore, noFaults } from "../support/faulty-store.js";
import { schedulingDefaults } from "../support/scheduling.js";

const engines = ["10.0.0.1:8000", "10.0.0.2:8000"];
const directory = new PoolDirectory([{ name: "llama", models: ["llama"], endpoints: engines }]);
const settings: QueueSettings = { maxRequests: 10, maxBytes: 1000, maxWaitMs: 10_000, agingMs: 500, retryMs: 60_000, priorities: {} };

let queues: PickQueue[] = [];
afterEach(() => {
  for (const queue of queues) queue.close();
  queues = [];
});

/** Two engines taking one request each; the queue over a real Picker and memory store; its clock is the test's. */
function rig(overrides: Partial<QueueSettings> = {}, store: LoadStore = new FaultyStore(noFaults).store) {
  const clock = { now: 0 };
  const picker = new Picker(store, () => directory, { ...schedulingDefaults, maxRequestsPerEngine: 1 });
  const held: Array<[string, number]> = [];
  const failures: unknown[] = [];
  const queue = new PickQueue(() => picker, { ...settings, ...overrides }, {
    held: (pool, count) => held.push([pool, count]),
    waited: () => undefined,
    failed: (error) => failures.push(error),
  }, () => clock.now);
  queues.push(queue);
  let sequence = 0;
  // As a promise, so that a test can hold one: the queue answers at once when nothing is held.
  const pick = (extra: Partial<QueueRequest> = {}): Promise<QueuedPickResult> =>
    Promise.resolve(queue.pick({ id: `r${(sequence += 1)}`, model: "llama", promptTokens: 100, priorityHint: undefined, bytes: 10, ...extra }));
  /** Ends a reservation as an exchange's release does, then tells the queue. */
  const release = async (result: QueuedPickResult): Promise<void> => {
    if (result.kind !== "picked") throw new Error(`expected a pick, got ${result.kind}`);
    await store.release(result.reservation.id, "ok");
    queue.wake();
  };
  return { queue, store, clock, pick, release, held, failures };
}

/** A turn of the event loop: picks on the memory store, and the dispatches they kick, are done by then. */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Whether the promise has settled yet, without waiting for it. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  const marker = Symbol("pending");
  return (await Promise.race([promise, new Promise((resolve) => setImmediate(() => resolve(marker)))])) !== marker;
}

describe("PickQueue", () => {
  it("holds a request while every engine is full and gives it the engine a release frees", async () => {
    const { pick, release, held } = rig();
    const first = await pick();
    await pick();
    const waiting = pick({ id: "third" });
    expect(await settled(waiting)).toBe(false);
    expect(held.at(-1)).toEqual(["llama", 1]);
    await release(first);
    const third = await waiting;
    expect(third).toMatchObject({ kind: "picked", reservation: { id: "third", engine: first.kind === "picked" ? first.reservation.engine : "" } });
    expect(held.at(-1)).toEqual(["llama", 0]);
  });

  it("answers 429 at once without a queue (maxRequests 0), as before", async () => {
    const { pick } = rig({ maxRequests: 0 });
    await pick();
    await pick();
    expect(await pick()).toMatchObject({ kind: "saturated", pool: "llama", limit: 1 });
  });

  /** Holds the requests, then frees one engine at a time (the running ones, then those served): the order they were served in. */
  async function servedOrder(queue: ReturnType<typeof rig>, requests: Array<Partial<QueueRequest>>): Promise<string[]> {
    const served: QueuedPickResult[] = [await queue.pick(), await queue.pick()];
    const waiting = requests.map((request) => queue.pick(request).then((result) => void served.push(result)));
    await turn();
    for (let freed = 0; freed < requests.length; freed += 1) {
      const next = served[freed];
      if (next !== undefined) await queue.release(next);
      await turn();
    }
    await Promise.all(waiting);
    return served.slice(2).map((result) => (result.kind === "picked" ? result.reservation.id : result.kind));
  }

  it("serves the highest priority first, then the shortest prompt", async () => {
    const order = await servedOrder(rig(), [
      { id: "long", promptTokens: 5000 },
      { id: "short", promptTokens: 50 },
      { id: "urgent-long", promptTokens: 9000, priorityHint: "5" },
      { id: "medium", promptTokens: 400 },
    ]);
    expect(order).toEqual(["urgent-long", "short", "medium", "long"]);
  });

  it("ages a long prompt: after waiting long enough it goes before fresh short ones", async () => {
    const { pick, release, clock } = rig({ agingMs: 100 });
    const running = [await pick(), await pick()];
    const long = pick({ id: "long", promptTokens: 6400 });
    await turn();
    // 6,400 tokens halve to 50 after 700 ms: below a fresh 60-token prompt.
    clock.now = 700;
    const short = pick({ id: "short", promptTokens: 60 });
    const [first] = running;
    if (first !== undefined) await release(first);
    expect(await long).toMatchObject({ kind: "picked", reservation: { id: "long" } });
    expect(await settled(short)).toBe(false);
  });

  it("takes a priority from the header's integer, else from the model's config, else 0; a bad header is ignored", async () => {
    const order = await servedOrder(rig({ priorities: { llama: 3 } }), [
      { id: "garbage", priorityHint: "high", promptTokens: 10 },
      { id: "header-4", priorityHint: " 4 ", promptTokens: 900 },
      { id: "header-2", priorityHint: "2", promptTokens: 1 },
    ]);
    // header-4 (4), then garbage (the model's 3), then header-2 (2).
    expect(order).toEqual(["header-4", "garbage", "header-2"]);
  });

  it("does not let a new request take an engine before the ones already held", async () => {
    const { pick, store } = rig();
    const first = await pick();
    await pick();
    const waiting = pick({ id: "waiting" });
    await turn();
    // Freed where this queue does not hear of it (another replica), then a new request comes.
    if (first.kind === "picked") await store.release(first.reservation.id, "ok");
    const newcomer = pick({ id: "newcomer" });
    expect(await waiting).toMatchObject({ kind: "picked", reservation: { id: "waiting" } });
    expect(await settled(newcomer)).toBe(false);
  });

  it("refuses once maxRequests or maxBytes are held", async () => {
    const byCount = rig({ maxRequests: 1 });
    await byCount.pick();
    await byCount.pick();
    void byCount.pick();
    expect(await byCount.pick()).toEqual({ kind: "queue_full", pool: "llama" });
    const byBytes = rig({ maxBytes: 100 });
    await byBytes.pick();
    await byBytes.pick();
    void byBytes.pick({ bytes: 60 });
    expect(await byBytes.pick({ bytes: 60 })).toEqual({ kind: "queue_full", pool: "llama" });
    expect(await settled(byBytes.pick({ bytes: 40 }))).toBe(false);
  });

  it("answers queue_timeout after maxWaitMs, and nothing is reserved for it", async () => {
    const { pick, store } = rig({ maxWaitMs: 20 });
    await pick();
    await pick();
    expect(await pick({ id: "late" })).toMatchObject({ kind: "queue_timeout", pool: "llama" });
    expect(await store.has("late")).toBe(false);
    expect(await store.size()).toBe(2);
  });

  it("drops a request whose exchange ended while it waited, freeing its place", async () => {
    const { pick } = rig({ maxRequests: 1 });
    await pick();
    await pick();
    const ended = new AbortController();
    const waiting = pick({ signal: ended.signal });
    ended.abort();
    expect(await waiting).toEqual({ kind: "abandoned" });
    expect(await settled(pick())).toBe(false);
  });

  it("tries again every retryMs: an engine freed elsewhere (another replica) is found without a release here", async () => {
    const { pick, store } = rig({ retryMs: 5 });
    const first = await pick();
    await pick();
    const waiting = pick({ id: "waiting" });
    await turn();
    if (first.kind === "picked") await store.release(first.reservation.id, "ok");
    expect(await waiting).toMatchObject({ kind: "picked", reservation: { id: "waiting" } });
  });

  it("fails only the held request whose pick the store failed; the others are still served", async () => {
    const faulty = new FaultyStore(noFaults);
    const { pick, release, failures } = rig({}, faulty.store);
    const running = [await pick(), await pick()];
    const doomed = pick({ id: "doomed", promptTokens: 1 });
    const fine = pick({ id: "fine", promptTokens: 2 });
    await turn();
    let injected = 0;
    faulty.use((call) => (call === "pickAndReserve" && (injected += 1) === 1 ? "reject" : undefined));
    const [first, second] = running;
    if (first !== undefined) await release(first);
    await expect(doomed).rejects.toThrow(/injected reject in pickAndReserve/);
    if (second !== undefined) await release(second);
    expect(await fine).toMatchObject({ kind: "picked", reservation: { id: "fine" } });
    expect(failures).toEqual([]);
  });

  it("answers every held request at close, reserving nothing", async () => {
    const { queue, pick, store } = rig();
    await pick();
    await pick();
    const waiting = pick({ id: "waiting" });
    await turn();
    queue.close();
    expect(await waiting).toMatchObject({ kind: "queue_timeout" });
    expect(await store.has("waiting")).toBe(false);
  });
});
