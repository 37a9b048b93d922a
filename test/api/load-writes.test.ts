import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { EarlyDeletes } from "../../src/api/early-deletes.js";
import type { JsonBody } from "../../src/api/body.js";
import { LoadWrites, ledgerId } from "../../src/api/load-writes.js";
import { MemoryLoadStore } from "../../src/load/memory-store.js";
import type { LoadStore } from "../../src/load/store.js";
import { PoolDirectory } from "../../src/pools/pools.js";
import { Picker } from "../../src/scheduling/picker.js";
import { FaultyStore, faultsAt, noFaults } from "../support/faulty-store.js";
import { schedulingDefaults } from "../support/scheduling.js";
import { LogCapture } from "../support/sidecar.js";

const directory = new PoolDirectory([{ name: "alpha", models: ["a"], endpoints: ["10.0.0.1:8000"] }]);
const writesOn = (store: LoadStore, lines = new LogCapture(), retryMs = 60_000) => {
  const picker = new Picker(store, () => directory, schedulingDefaults);
  return new LoadWrites({ store, directory: () => directory, picker: () => picker, log: pino({ level: "debug" }, lines), earlyDelete: { retryMs, capacity: 2 } });
};
const setup = (retryMs = 60_000) => {
  const store = new MemoryLoadStore();
  const lines = new LogCapture();
  return { store, writes: writesOn(store, lines, retryMs), lines };
};
/** A body as the HTTP layer hands it over. */
const json = (value: unknown): JsonBody => ({ value, text: JSON.stringify(value) });
const add = json({ cluster: "alpha", request_id: "r1", prompt_length: 40, ip: "10.0.0.1" });
const r1 = json({ request_id: "r1" });
const r2 = json({ request_id: "r2" });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// The Go service answers every delete at once and retries an unknown id once, 1 s later
// (DeleteRequest / DeletePromptLength in pkg/meta/load/load_stats.go).
describe("LoadWrites: a delete that arrives before its add", () => {
  it("DELETE stats first: answered OK at once; the add, when it comes, is ended at once", async () => {
    const { store, writes } = setup();
    expect(await writes.deleteStats(r1)).toEqual({ ok: true });
    expect(writes.waitingDeletes).toBe(1);
    expect(await writes.add(add)).toEqual({ ok: true });
    expect(writes.waitingDeletes).toBe(0);
    expect(store.size()).toBe(0);
    expect(store.loads([]).get("10.0.0.1:8000")).toMatchObject({ requests: 0, prefillTokens: 0, tokensHeld: 0 });
    writes.close();
  });

  it("DELETE prompt first: the request stays in flight without its prompt", async () => {
    const { store, writes } = setup();
    expect(await writes.deletePrompt(r1)).toEqual({ ok: true });
    await writes.add(add);
    expect(store.has(ledgerId("r1"))).toBe(true);
    expect(store.loads([]).get("10.0.0.1:8000")).toMatchObject({ requests: 1, prefillRequests: 0, prefillTokens: 0, tokensHeld: 40 });
    expect(await writes.deleteStats(r1)).toEqual({ ok: true });
    expect(store.size()).toBe(0);
    writes.close();
  });

  it("both deletes first: the request ends once", async () => {
    const { store, writes } = setup();
    await writes.deletePrompt(r1);
    await writes.deleteStats(r1);
    expect(writes.waitingDeletes).toBe(1);
    await writes.add(add);
    expect(store.loads([]).get("10.0.0.1:8000")).toMatchObject({ requests: 0, prefillRequests: 0, prefillTokens: 0, tokensHeld: 0 });
    writes.close();
  });

  // TestDeleteNonExistentRequest: nothing counted, a warning after the retry.
  it("without an add, it is retried once after the wait and a warning says so; a later add is counted", async () => {
    const { store, writes, lines } = setup(20);
    await writes.deleteStats(r1);
    await expect.poll(() => lines.withMessage("delete found no open request, also on its retry; the load may be off until expiry if its add comes later").length).toBe(1);
    expect(writes.waitingDeletes).toBe(0);
    await writes.add(add);
    expect(store.size()).toBe(1);
    expect(await writes.deleteStats(r1)).toEqual({ ok: true });
    expect(store.size()).toBe(0);
  });

  it("the retry applies it when the add reached the store another way (another sidecar sharing it)", async () => {
    const { store, writes, lines } = setup(20);
    await writes.deleteStats(r1);
    store.reserve({ id: ledgerId("r1"), pool: "alpha", engine: "10.0.0.1:8000", promptTokens: 40 });
    await expect.poll(() => store.size()).toBe(0);
    expect(lines.withMessage("early delete applied on retry")).toHaveLength(1);
  });

  it("when applying it at the add fails, the add answers the failure and the retry still ends the request", async () => {
    const faulty = new FaultyStore(noFaults);
    const writes = writesOn(faulty.store, new LogCapture(), 20);
    await writes.deleteStats(r1);
    faulty.use(faultsAt({ release: "reject" }));
    await expect(writes.add(add)).rejects.toThrow("injected reject in release");
    expect(faulty.inner.size()).toBe(1);
    faulty.use(noFaults);
    await expect.poll(() => faulty.inner.size()).toBe(0);
  });

  it("a retry that fails (throw or reject) is logged with its reason, never thrown", async () => {
    const faulty = new FaultyStore(noFaults);
    const lines = new LogCapture();
    const writes = writesOn(faulty.store, lines, 20);
    await writes.deleteStats(r1);
    await writes.deletePrompt(r2);
    faulty.use(faultsAt({ release: "throw", has: "reject" }));
    await expect.poll(() => lines.withMessage("retrying an early delete failed").length).toBe(2);
    expect(lines.withMessage("retrying an early delete failed").map((line) => line["reason"])).toEqual([
      "InjectedStoreError: injected throw in release",
      "InjectedStoreError: injected reject in has",
    ]);
  });

  it("close() drops the waiting deletes and their retries", async () => {
    const { store, writes } = setup(20);
    await writes.deleteStats(r1);
    writes.close();
    expect(writes.waitingDeletes).toBe(0);
    store.reserve({ id: ledgerId("r1"), pool: "alpha", engine: "10.0.0.1:8000", promptTokens: 40 });
    await sleep(60);
    expect(store.size()).toBe(1);
  });
});

describe("EarlyDeletes", () => {
  it("holds at most `capacity` ids; beyond that a delete is dropped and `full` told once until there is room", () => {
    const retried: string[] = [];
    const full: number[] = [];
    const early = new EarlyDeletes(60_000, 2, (id) => retried.push(id), (capacity) => full.push(capacity));
    early.defer("a", "stats");
    early.defer("b", "prompt");
    early.defer("c", "stats");
    early.defer("d", "stats");
    expect(early.size).toBe(2);
    expect(full).toEqual([2]);
    // A second delete for an id already waiting does not take another slot.
    early.defer("a", "prompt");
    expect(early.size).toBe(2);
    expect(early.pending("a")).toEqual({ prompt: true, stats: true });
    expect(early.pending("c")).toBeUndefined();
    early.settle("a");
    early.defer("c", "stats");
    early.defer("d", "stats");
    expect(full).toEqual([2, 2]);
    early.close();
    expect(early.size).toBe(0);
    expect(retried).toEqual([]);
  });
});

describe("LoadWrites: picks and conditional adds for schedulers that place requests themselves", () => {
  const pool = new PoolDirectory([{ name: "beta", models: ["b"], endpoints: ["10.0.1.1:8000", "10.0.1.2:8000", "10.0.1.3:8000"] }]);
  const writesFor = (store: MemoryLoadStore, settings = schedulingDefaults) => {
    const picker = new Picker(store, () => pool, settings);
    return new LoadWrites({ store, directory: () => pool, picker: () => picker, log: pino({ level: "silent" }) });
  };

  it("picks the least loaded of the cluster's engines, reserves it, and the usual delete ends it", async () => {
    const store = new MemoryLoadStore();
    const writes = writesFor(store);
    store.reserve({ id: "busy1", pool: "beta", engine: "10.0.1.1:8000", promptTokens: 10 });
    store.reserve({ id: "busy3", pool: "beta", engine: "10.0.1.3:8000", promptTokens: 10 });
    const picked = await writes.pick(json({ cluster: "beta", request_id: "p1", prompt_length: 300 }));
    expect(picked).toEqual({ ok: true, data: { ip: "10.0.1.2", port: 8000, endpoint: "10.0.1.2:8000", fallbacks: [] } });
    expect(store.poolLoads("beta").get("10.0.1.2:8000")).toMatchObject({ requests: 1, prefillTokens: 300 });
    expect(await writes.deleteStats(json({ request_id: "p1" }))).toEqual({ ok: true });
    expect(store.poolLoads("beta").get("10.0.1.2:8000")).toMatchObject({ requests: 0, prefillTokens: 0, tokensHeld: 0 });
    writes.close();
  });

  it("picks among the candidates named, bare IPs keyed as the cluster's endpoints, and in clusters not configured", async () => {
    const store = new MemoryLoadStore();
    const writes = writesFor(store);
    const named = await writes.pick(json({ cluster: "beta", request_id: "p1", candidates: ["10.0.1.3"] }));
    expect(named).toMatchObject({ ok: true, data: { endpoint: "10.0.1.3:8000" } });
    const elsewhere = await writes.pick(json({ cluster: "gamma", request_id: "p2", candidates: ["10.9.0.1:9000"] }));
    expect(elsewhere).toMatchObject({ ok: true, data: { ip: "10.9.0.1", port: 9000, endpoint: "10.9.0.1:9000" } });
    expect(store.poolLoads("gamma").get("10.9.0.1:9000")?.requests).toBe(1);
    writes.close();
  });

  it("refuses what it cannot place, each with its own status and code, and counts nothing", async () => {
    const store = new MemoryLoadStore();
    const writes = writesFor(store, { ...schedulingDefaults, maxRequestsPerEngine: 1 });
    const expectRefused = async (body: unknown, status: number, code: number, reason: RegExp) => {
      const result = await writes.pick(json(body));
      expect(result).toMatchObject({ ok: false, status, error: { code } });
      if (!result.ok) expect(result.error.reason).toMatch(reason);
    };
    await expectRefused({ cluster: "gamma", request_id: "x" }, 400, 40001400, /not a configured pool: name its engines in 'candidates'/);
    await expectRefused({ cluster: "beta", request_id: "x", candidates: ["10.0.1.1:0"] }, 400, 40001400, /candidates.0: must be an IPv4 address or ip:port/);
    await expectRefused({ cluster: "beta", request_id: "x", candidates: [] }, 400, 40001400, /candidates/);
    await expectRefused({ cluster: "beta", request_id: "x", prompt_length: -1 }, 400, 40001400, /prompt_length/);
    expect(store.size()).toBe(0);
    for (const id of ["a", "b", "c"]) expect(await writes.pick(json({ cluster: "beta", request_id: id }))).toMatchObject({ ok: true });
    await expectRefused({ cluster: "beta", request_id: "a", candidates: ["10.9.9.9:1"] }, 400, 40001000, /request_id 'a' is already open/);
    await expectRefused({ cluster: "beta", request_id: "d" }, 429, 42901000, /every candidate of cluster 'beta' carries 1 requests/);
    expect(store.size()).toBe(3);
    writes.close();
  });

  it("adds with `if` only while the engine stays within the bound; past it, 409 with the engine's numbers", async () => {
    const store = new MemoryLoadStore();
    const writes = writesFor(store);
    const bounded = (id: string, prompt: number) =>
      writes.add(json({ cluster: "beta", request_id: id, prompt_length: prompt, ip: "10.0.1.1", if: { max_queued_req_num: 2, max_prompt_length: 500 } }));
    expect(await bounded("a", 300)).toEqual({ ok: true });
    const over = await bounded("b", 300);
    expect(over).toMatchObject({
      ok: false,
      status: 409,
      error: { code: 40901000, reason: "engine 10.0.1.1:8000 of cluster 'beta' is at the bound given in 'if'" },
      data: { endpoint: "10.0.1.1:8000", queued_req_num: 1, prompt_length: 300 },
    });
    expect(await bounded("b", 200)).toEqual({ ok: true });
    expect(await bounded("c", 0)).toMatchObject({ ok: false, status: 409, data: { queued_req_num: 2, prompt_length: 500 } });
    // A duplicate stays ignored, as without `if`.
    expect(await bounded("a", 0)).toEqual({ ok: true });
    expect(store.size()).toBe(2);
    writes.close();
  });

  it("refuses a bound it does not understand rather than adding without it", async () => {
    const store = new MemoryLoadStore();
    const writes = writesFor(store);
    const result = await writes.add(json({ cluster: "beta", request_id: "a", ip: "10.0.1.1", if: { max_queued: 2 } }));
    expect(result).toMatchObject({ ok: false, status: 400, error: { code: 40001400 } });
    if (!result.ok) expect(result.error.reason).toMatch(/if: Unrecognized key: "max_queued"/);
    const negative = await writes.add(json({ cluster: "beta", request_id: "a", ip: "10.0.1.1", if: { max_queued_req_num: -1 } }));
    expect(negative).toMatchObject({ ok: false, status: 400 });
    expect(store.size()).toBe(0);
    writes.close();
  });
});
