// Engine simulators on the Llama-3.1-8B-on-H100 step model, the real sidecar in this process, and a
// stand-in for Envoy (the Envoy-faithful ext_proc client behind a real HTTP port): what `npm run
// demo` and `npm run try` run.
import { parseConfig } from "../../src/config/load.js";
import { createLogger, type LogLevel } from "../../src/log.js";
import { startSidecar, type Sidecar } from "../../src/sidecar.js";
import { startEngineSim, type EngineSim } from "../engine-sim/engine.js";
import { LLAMA_8B_H100 } from "../engine-sim/models.js";
import type { MetadataNamespaces } from "../envoy/ext-proc-client.js";
import { startEnvoyStandIn, type EnvoyStandIn } from "../envoy/proxy.js";

export const MODEL = "meta-llama/Llama-3.1-8B-Instruct";
export const POOL = "llama-8b";

export interface DemoCluster {
  engines: EngineSim[];
  sidecar: Sidecar;
  /** The Envoy stand-in the sidecar picks for. */
  envoy: EnvoyStandIn;
  /** A stand-in that sends every request to this engine (a GIE subset hint of one): the same path, someone else's choice. */
  pinnedTo(engine: EngineSim): Promise<EnvoyStandIn>;
  close(): Promise<void>;
}

export interface DemoOptions {
  engines: number;
  /** The sidecar's HTTP port (0: any free one). */
  httpPort: number;
  /** The Envoy stand-in's port (0: any free one). */
  envoyPort: number;
  logLevel: LogLevel;
}

export async function startDemoCluster(options: DemoOptions): Promise<DemoCluster> {
  const engines = await Promise.all(Array.from({ length: options.engines }, () => startEngineSim({ model: LLAMA_8B_H100 })));
  const config = parseConfig(
    JSON.stringify({
      extproc: { port: 0 },
      health: { port: 0 },
      http: { port: options.httpPort },
      log: { level: options.logLevel },
      pools: [{ name: POOL, models: [MODEL], endpoints: engines.map((engine) => engine.address) }],
    }),
    "demo",
  );
  const stopEngines = (): Promise<unknown> => Promise.all(engines.map((engine) => engine.close()));
  const sidecar = await startSidecar(config, createLogger(config.log.level)).catch(async (error: unknown) => {
    await stopEngines();
    throw error;
  });
  const extProcAddress = `127.0.0.1:${sidecar.ports.extproc}`;
  const standIns: EnvoyStandIn[] = [];
  const standIn = async (metadataContext?: MetadataNamespaces, listenPort = 0): Promise<EnvoyStandIn> => {
    const started = await startEnvoyStandIn({ extProcAddress, listenPort, ...(metadataContext === undefined ? {} : { metadataContext }) });
    standIns.push(started);
    return started;
  };
  const close = async (): Promise<void> => {
    await Promise.all(standIns.map((started) => started.close()));
    await sidecar.stop(0);
    await stopEngines();
  };
  const envoy = await standIn(undefined, options.envoyPort).catch(async (error: unknown) => {
    await close();
    throw error;
  });
  return {
    engines,
    sidecar,
    envoy,
    pinnedTo: (engine) => standIn({ "envoy.lb.subset_hint": { "x-gateway-destination-endpoint-subset": [engine.address] } }),
    close,
  };
}
