import { afterEach, describe, expect, it } from "vitest";
import type { PicksView, PickView } from "../../src/api/picks-view.js";
import { FAULT_HEADER } from "../engine-sim/engine.js";
import { apiClient } from "../support/http.js";
import { idle, LogCapture, startTestSidecar, totalLoad } from "../support/sidecar.js";
import { chat, chatRequest, startRig, type Rig } from "./harness.js";

// Explained picks over real HTTP: picks made through ext_proc (the Envoy-faithful client in front
// of engine simulators) and through POST /v1/load/pick, read back from GET /debug/picks and the
// debug log.

let rig: Rig | undefined;
let stop: (() => Promise<void>) | undefined;
afterEach(async () => {
  const [started, stopping] = [rig, stop];
  rig = undefined;
  stop = undefined;
  await started?.expectIdle();
  await started?.close();
  await stopping?.();
});

const picksOf = async (port: number, query = ""): Promise<PicksView> => {
  const answer = await apiClient(port)<PicksView>("GET", `/debug/picks${query}`);
  expect(answer).toMatchObject({ httpStatus: 200, status: "OK", error: null });
  return answer.data;
};

/** The default load weights (1, 1, 1, 0.5), as the load scorer at weight 1 scales them to sum to 1. */
const defaultLoadWeights = { requests: 1 / 3.5, prefillRequests: 1 / 3.5, prefillTokens: 1 / 3.5, tokensHeld: 0.5 / 3.5 };

describe("GET /debug/picks", () => {
  it("shows each ext_proc pick, newest first: engines each filter took out, every candidate's cost per scorer, the engine the store reserved", async () => {
    rig = await startRig({ engines: 3, sidecar: { scheduling: { scorers: { prefix: 0.9 }, ejectAfterErrors: 1, ejectSeconds: 60 } } });
    const all = rig.engines.map((engine) => engine.address);
    const prompt = chat("llama", "Summarise the shipping manifest for container 7. ".repeat(10));
    const a = await rig.exchange({ request: chatRequest(prompt, { "x-request-id": "pick-a" }) });
    // The same prompt again goes where its blocks are; that engine answers 500 and is ejected.
    const b = await rig.exchange({ request: chatRequest(prompt, { "x-request-id": "pick-b", [FAULT_HEADER]: "status=500" }) });
    expect(b.routedTo).toBe(a.routedTo);
    const c = await rig.exchange({ request: chatRequest(prompt, { "x-request-id": "pick-c" }) });
    expect(c.routedTo).not.toBe(a.routedTo);

    const view = await picksOf(rig.sidecar.ports.http);
    expect(view).toMatchObject({ capacity: 100, max_candidates_per_pick: 32 });
    expect(view.picks.map((pick) => pick.request_id)).toEqual(["pick-c", "pick-b", "pick-a"]);
    const [pickC, pickB, pickA] = view.picks as [PickView, PickView, PickView];
    const prefixCost = (engine: string, learnt: boolean): number => (learnt && engine === a.routedTo ? 0 : 0.9);
    const scored = (engines: string[], learnt: boolean) =>
      engines.map((engine) => ({ engine, scores: { slowStart: 0, prefix: prefixCost(engine, learnt), stepPhase: 0 }, bias: prefixCost(engine, learnt) }));

    const common = { model: "llama", pool: "llama", outcome: "picked", fallbacks: [], load_weights: defaultLoadWeights, max_requests: 0 };
    expect(pickA).toMatchObject({ ...common, engines: 3, removed_by_filter: { subset: 0, health: 0, saturation: 0 }, candidates: 3, weighed: [3], engine: a.routedTo });
    expect(pickA.scored).toEqual(scored(all, false));
    expect(pickB).toMatchObject({ ...common, candidates: 3, engine: b.routedTo });
    expect(pickB.scored).toEqual(scored(all, true));
    expect(pickC).toMatchObject({ ...common, engines: 3, removed_by_filter: { subset: 0, health: 1, saturation: 0 }, candidates: 2, weighed: [2], engine: c.routedTo });
    expect(pickC.scored).toEqual(scored(all.filter((engine) => engine !== a.routedTo), true));
    expect(pickC.at).toBeGreaterThanOrEqual(pickB.at);

    expect((await picksOf(rig.sidecar.ports.http, "?limit=2")).picks.map((pick) => pick.request_id)).toEqual(["pick-c", "pick-b"]);
  });

  it("refuses a limit that is not a whole number from 1 to 1000 with a 400 naming it", async () => {
    const sidecar = await startTestSidecar([{ name: "llama", models: ["llama"], endpoints: ["10.0.0.1:8000"] }]);
    stop = () => sidecar.stop(0);
    const call = apiClient(sidecar.ports.http);
    for (const limit of ["0", "-1", "1.5", "abc", "1001", "", "99999999999"]) {
      const answer = await call("GET", `/debug/picks?limit=${limit}`);
      expect(answer, limit).toMatchObject({ httpStatus: 400, status: "ERROR", data: null, error: { code: 40001400 } });
      expect(answer.error?.message).toContain("query parameter 'limit' must be a whole number from 1 to 1000");
    }
    expect((await call("GET", "/debug/picks?limit=1000")).httpStatus).toBe(200);
  });

  it("explains POST /v1/load/pick too, and logs each pick at debug level with the same content, only while debug is on", async () => {
    const capture = new LogCapture();
    const engines = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"];
    const sidecar = await startTestSidecar([{ name: "llama", models: ["llama"], endpoints: engines }], { scheduling: { fallbacks: 1 } }, capture);
    stop = async () => {
      try {
        await expect.poll(() => totalLoad(sidecar)).toEqual(idle);
      } finally {
        await sidecar.stop(0);
      }
    };
    const call = apiClient(sidecar.ports.http);
    await call("POST", "/v1/load/stats", { cluster: "llama", request_id: "busy", prompt_length: 100, ip: "10.0.0.1" });
    expect((await call("POST", "/log/level", { LevelParam: "DEBUG" })).httpStatus).toBe(200);
    const picked = await call<{ endpoint: string; fallbacks: string[] }>("POST", "/v1/load/pick", { cluster: "llama", request_id: "api-1", prompt_length: 10 });
    expect(picked.httpStatus).toBe(200);
    expect((await call("POST", "/log/level", { LevelParam: "INFO" })).httpStatus).toBe(200);
    await call("POST", "/v1/load/pick", { cluster: "llama", request_id: "api-2", prompt_length: 10 });

    const [second, first] = (await picksOf(sidecar.ports.http)).picks as [PickView, PickView];
    expect(second.request_id).toBe("api-2");
    expect(first).toMatchObject({ id: "api:api-1", request_id: "api-1", model: null, pool: "llama", outcome: "picked", engine: picked.data.endpoint, fallbacks: picked.data.fallbacks });
    // The busy engine is neither chosen nor the fallback: the other two are idle.
    expect([first.engine, ...first.fallbacks].sort()).toEqual(engines.slice(1));
    expect(first.scored).toEqual(engines.map((engine) => ({ engine, scores: { slowStart: 0, prefix: 0, stepPhase: 0 }, bias: 0 })));

    await expect.poll(() => capture.withMessage("pick").length).toBe(1);
    const [line] = capture.withMessage("pick");
    expect(line).toMatchObject({ level: 20, id: "api:api-1", requestId: "api-1", pool: "llama", outcome: "picked", engine: first.engine, fallbacks: first.fallbacks });
    expect(line?.["scored"]).toEqual(first.scored);
    expect(line?.["loadWeights"]).toEqual(first.load_weights);
    expect(line?.["removed"]).toEqual(first.removed_by_filter);

    for (const id of ["busy", "api-1", "api-2"]) await call("DELETE", "/v1/load/stats", { request_id: id });
  });

  it("scheduling.debugPicks reloads live: the newest picks that fit are kept, 0 keeps none; a warming engine's slow-start cost shows", async () => {
    rig = await startRig({ engines: 2, pools: ([a]) => [{ name: "llama", models: ["llama"], endpoints: [a!] }], sidecar: { scheduling: { slowStartSeconds: 1000 } } });
    const [a, b] = rig.engines.map((engine) => engine.address) as [string, string];
    const config = rig.sidecar.config;
    await rig.exchange({ request: chatRequest(chat("llama", "before"), { "x-request-id": "before" }) });
    rig.sidecar.reload({ ...config, scheduling: { ...config.scheduling, debugPicks: 2 }, pools: [{ name: "llama", models: ["llama"], endpoints: [a, b], dns: undefined, tokenizer: "o200k" }] });
    for (const id of ["w1", "w2"]) expect((await rig.exchange({ request: chatRequest(chat("llama", id), { "x-request-id": id }) })).routedTo).toBe(a);
    const view = await picksOf(rig.sidecar.ports.http);
    expect(view.capacity).toBe(2);
    expect(view.picks.map((pick) => pick.request_id)).toEqual(["w2", "w1"]);
    const [cold] = view.picks[0]!.scored.filter((candidate) => candidate.engine === b);
    // Just added, warming over 1000 s: its coldness is ~1 (exactly its bias: the prompt is shorter than a block and nothing streamed, so prefix and step phase cost 0).
    expect(cold?.scores.slowStart).toBeGreaterThan(0.99);
    expect(cold?.scores.slowStart).toBeLessThanOrEqual(1);
    expect(cold?.bias).toBe(cold?.scores.slowStart);
    expect(view.picks[0]!.scored.find((candidate) => candidate.engine === a)).toEqual({ engine: a, scores: { slowStart: 0, prefix: 0, stepPhase: 0 }, bias: 0 });

    rig.sidecar.reload({ ...config, scheduling: { ...config.scheduling, debugPicks: 0 }, pools: [{ name: "llama", models: ["llama"], endpoints: [a, b], dns: undefined, tokenizer: "o200k" }] });
    await rig.exchange({ request: chatRequest(chat("llama", "after"), { "x-request-id": "after" }) });
    expect(await picksOf(rig.sidecar.ports.http)).toEqual({ capacity: 0, max_candidates_per_pick: 32, picks: [] });
  });
});
