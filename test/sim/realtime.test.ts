import { afterEach, describe, expect, it } from "vitest";
import { startEngineSim, type EngineSim } from "../engine-sim/engine.js";
import { LLAMA_8B_H100, slowedDown } from "../engine-sim/models.js";
import { idle, startTestSidecar, totalLoad } from "../support/sidecar.js";
import { RoundRobinRouter } from "./peers.js";
import { runRealTime, warmUpRequests, type Chooser } from "./realtime.js";
import { runWorkload } from "./run.js";
import { mixed } from "./workloads.js";

// Four times as slow as the H100 (a step ~23 ms, an 8k-token prefill ~0.6 s), so that the model's
// time stands out against the hops and tokenizing of a loaded machine, all in this one process.
const model = slowedDown(LLAMA_8B_H100, 4);
const ENGINES = 4;
// Node's cached loop clock can make a timer look ~1 ms early.
const SLACK_MS = 2;
// Mixed prompts (20 % of 2k–8k tokens), answers cut short so the test stays short.
const requests = mixed.requests(24, { rate: 12 }, 3).map((request) => ({ ...request, outputTokens: Math.min(request.outputTokens, 24) }));

let closing: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of closing.splice(0).reverse()) await close();
});

async function cluster(): Promise<{ engines: EngineSim[]; sidecar: Awaited<ReturnType<typeof startTestSidecar>> }> {
  const engines = await Promise.all(Array.from({ length: ENGINES }, () => startEngineSim({ model })));
  closing.push(() => Promise.all(engines.map((engine) => engine.close())).then(() => undefined));
  const sidecar = await startTestSidecar([{ name: "llama", models: ["*"], endpoints: engines.map((engine) => engine.address) }]);
  closing.push(() => sidecar.stop(0));
  return { engines, sidecar };
}

const warmUp = warmUpRequests(mixed.requests(8, { rate: 50 }, 99), 4);

async function run(chooser: Chooser, engines: EngineSim[], extProc: number) {
  const settings = { extProc: `127.0.0.1:${extProc}`, engines: engines.map((engine) => engine.address), chooser, timeScale: 1, model: "llama" };
  await runRealTime(warmUp, settings);
  return runRealTime(requests, settings);
}

describe("runRealTime", () => {
  it("round robin through the sidecar: engine i mod N, and no first token sooner than the virtual-time run of the same model allows", async () => {
    const { engines, sidecar } = await cluster();
    const live = await run("round-robin", engines, sidecar.ports.extproc);
    const virtual = new Map((await runWorkload(engines.map(() => model), new RoundRobinRouter(ENGINES), requests)).map((o) => [o.id, o]));

    const byArrival = [...live].sort((a, b) => a.arrivalMs - b.arrivalMs);
    expect(byArrival.map((o) => o.engine)).toEqual(requests.map((_, i) => i % ENGINES));
    // Later, by the hops and a loaded machine, is expected (bench:routing:realtime prints by how
    // much); sooner than a step is not: the engines would be faster than their model.
    for (const outcome of live) {
      const modelled = virtual.get(outcome.id)!;
      expect(outcome.firstTokenMs - outcome.arrivalMs, outcome.id).toBeGreaterThanOrEqual(modelled.firstTokenMs - modelled.arrivalMs - model.stepBaseMs - SLACK_MS);
    }
    await expect.poll(() => totalLoad(sidecar)).toEqual(idle);
  });

  it("the sidecar's choice: every request streams to its end, spread over the engines, and the sidecar's load is back at zero", async () => {
    const { engines, sidecar } = await cluster();
    const live = await run("sidecar", engines, sidecar.ports.extproc);

    expect(live).toHaveLength(requests.length);
    const perEngine = engines.map((_, i) => live.filter((o) => o.engine === i).length);
    expect(Math.min(...perEngine)).toBeGreaterThan(0);
    expect(engines.reduce((n, engine) => n + engine.stats().completed, 0)).toBe(warmUp.length + requests.length);
    await expect.poll(() => totalLoad(sidecar)).toEqual(idle);
  });
});
