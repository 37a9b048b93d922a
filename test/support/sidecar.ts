import { Writable } from "node:stream";
import { pino } from "pino";
import { parseConfig } from "../../src/config/load.js";
import type { Config } from "../../src/config/schema.js";
import type { EngineLoad, LoadStore } from "../../src/load/store.js";
import { createLogger, type Logger } from "../../src/log.js";
import { startSidecar, type Sidecar } from "../../src/sidecar.js";

export interface PoolSpec {
  name: string;
  models: string[];
  endpoints?: string[];
  dns?: { name: string; port: number; intervalSeconds?: number; servers?: string[] };
  tokenizer?: "o200k" | { file: string; countWholeUpTo?: number };
}

/** Log lines the sidecar wrote, parsed; pass one to `startTestSidecar` to keep them. */
export class LogCapture extends Writable {
  readonly lines: Array<Record<string, unknown>> = [];

  override _write(chunk: Buffer, _encoding: string, done: () => void): void {
    for (const line of chunk.toString("utf8").split("\n")) if (line.trim() !== "") this.lines.push(JSON.parse(line) as Record<string, unknown>);
    done();
  }

  /** The lines with this message. */
  withMessage(msg: string): Array<Record<string, unknown>> {
    return this.lines.filter((line) => line["msg"] === msg);
  }
}

/** Starts the real sidecar in this process on free ports, with the given pools and settings. */
export async function startTestSidecar(
  pools: PoolSpec[],
  extra: Record<string, unknown> = {},
  capture?: LogCapture,
  store?: LoadStore,
): Promise<Sidecar & { config: Config; log: Logger }> {
  const config = parseConfig(
    JSON.stringify({
      extproc: { port: 0 },
      health: { port: 0 },
      http: { port: 0 },
      log: { level: process.env["TEST_LOG_LEVEL"] ?? "silent" },
      ...extra,
      pools,
    }),
    "test-config",
  );
  const log = capture === undefined ? createLogger(config.log.level) : pino({ level: "info" }, capture);
  const sidecar = await startSidecar(config, log, store);
  return Object.assign(sidecar, { config, log });
}

/** Sum of every engine's numbers: all zero once traffic has stopped. */
export async function totalLoad(sidecar: Sidecar): Promise<EngineLoad & { ledger: number }> {
  const total = { requests: 0, prefillRequests: 0, prefillTokens: 0, tokensHeld: 0, ledger: await sidecar.store.size() };
  for (const load of (await sidecar.store.loads([])).values()) {
    total.requests += load.requests;
    total.prefillRequests += load.prefillRequests;
    total.prefillTokens += load.prefillTokens;
    total.tokensHeld += load.tokensHeld;
  }
  return total;
}

export const idle = { requests: 0, prefillRequests: 0, prefillTokens: 0, tokensHeld: 0, ledger: 0 };
