import { EnvoyExtProcClient, httpUpstream, type ExchangeResult, type ExchangeSpec } from "../envoy/ext-proc-client.js";
import { startEngineSim, type EngineSim, type EngineSimOptions } from "../engine-sim/engine.js";
import { idle, startTestSidecar, totalLoad, type LogCapture, type PoolSpec } from "../support/sidecar.js";
import { expect } from "vitest";
import type { LoadStore } from "../../src/load/store.js";

export const ROUTE_HEADER = "x-gateway-destination-endpoint";

/** A sidecar with engine simulators behind it and an Envoy-faithful client in front. */
export interface Rig {
  sidecar: Awaited<ReturnType<typeof startTestSidecar>>;
  engines: EngineSim[];
  client: EnvoyExtProcClient;
  /** One exchange through ext_proc to the real engines over HTTP. */
  exchange(spec: Omit<ExchangeSpec, "upstream"> & Partial<Pick<ExchangeSpec, "upstream">>): Promise<ExchangeResult>;
  /** Every counter is back at zero and the ledger is empty. */
  expectIdle(): Promise<void>;
  close(): Promise<void>;
}

export interface RigOptions {
  engines?: number;
  engine?: EngineSimOptions;
  /** Pools built from the engines: by default one pool "llama" serving model "llama" over all of them. */
  pools?: (engines: string[]) => PoolSpec[];
  sidecar?: Record<string, unknown>;
  /** Keeps the sidecar's log lines. */
  capture?: LogCapture;
  /** The load store the sidecar uses (default: a fresh memory store). */
  store?: LoadStore;
}

export async function startRig(options: RigOptions = {}): Promise<Rig> {
  const engines = await Promise.all(Array.from({ length: options.engines ?? 2 }, () => startEngineSim(options.engine)));
  const addresses = engines.map((engine) => engine.address);
  const pools = options.pools?.(addresses) ?? [{ name: "llama", models: ["llama"], endpoints: addresses }];
  const sidecar = await startTestSidecar(pools, options.sidecar, options.capture, options.store);
  const client = new EnvoyExtProcClient(`127.0.0.1:${sidecar.ports.extproc}`);
  const upstream = httpUpstream();
  return {
    sidecar,
    engines,
    client,
    exchange: (spec) => client.exchange({ upstream, ...spec }),
    async expectIdle() {
      // Polled by hand: expect.poll is not allowed in afterAll hooks.
      const deadline = Date.now() + 5000;
      let load = await totalLoad(sidecar);
      while (JSON.stringify(load) !== JSON.stringify(idle) && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 10));
        load = await totalLoad(sidecar);
      }
      expect(load).toEqual(idle);
    },
    async close() {
      client.close();
      await sidecar.stop(0);
      await Promise.all(engines.map((engine) => engine.close()));
    },
  };
}

export const chat = (model: string, content: string, extra: Record<string, unknown> = {}): string =>
  JSON.stringify({ model, messages: [{ role: "user", content }], ...extra });

export const chatRequest = (body: string, headers: Record<string, string> = {}) => ({
  method: "POST",
  path: "/v1/chat/completions",
  headers: { "content-type": "application/json", ...headers },
  body,
});

/** The error body of an ImmediateResponse, parsed. */
export function errorOf(result: ExchangeResult): { message: string; type: string; code: string } {
  expect(result.immediateResponse).toBeDefined();
  return (JSON.parse(result.body.toString("utf8")) as { error: { message: string; type: string; code: string } }).error;
}
