import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { FAULT_HEADER, FAULT_MESSAGE, parseFault, type Fault } from "./faults.js";
import { generate, sendJson, type GenerationOutcome } from "./generation.js";
import { resolveOptions, type EngineSimOptions } from "./options.js";
import { parseGenerationRequest, RequestError, type Endpoint } from "./request.js";
import { errorBody, modelList } from "./responses.js";
import { StepLoop, type StepTiming } from "./step-loop.js";

export { DEFAULT_OPTIONS, type EngineSimOptions } from "./options.js";
export { FAULT_HEADER, FAULT_MESSAGE, parseFault, type Fault } from "./faults.js";
export { FAST_MODEL, LLAMA_8B_H100, slowedDown } from "./models.js";
export type { EngineModel } from "./scheduler.js";
export type { StepTiming } from "./step-loop.js";

/** Response header naming the simulator that answered, so a client behind a proxy can tell. */
export const ENGINE_HEADER = "x-sim-engine";

/**
 * Counters since start. Every request ends in exactly one of completed / errored / aborted, so
 * `received === inFlight + completed + errored + aborted`.
 */
export interface EngineStats {
  /** HTTP requests received, any path. */
  readonly received: number;
  /** Received and not yet ended (includes queued and hanging requests). */
  readonly inFlight: number;
  /** Sequences waiting for the engine to admit them (vLLM's num_requests_waiting); a batched completion has one per prompt. */
  readonly queued: number;
  /** Sequences in the running batch, in prefill or decode (num_requests_running); out as soon as their last token is or they are aborted. */
  readonly running: number;
  /** Requests playing the `hang` fault: held open, never on the engine's scheduler. */
  readonly hanging: number;
  /** Responses sent to their end without an error. */
  readonly completed: number;
  /** Responses sent to their end carrying an error: error status or in-stream error event. */
  readonly errored: number;
  /** Responses cut short: client went away, `reset-after` fault, or `close()`. */
  readonly aborted: number;
  /** Requests received per URL path (query string excluded). */
  readonly byPath: Readonly<Record<string, number>>;
  /** Prompt / completion tokens of completed generations, as their usage reports (or would). */
  readonly promptTokens: number;
  readonly completionTokens: number;
  /** Prompt tokens of completed generations that the prefix cache served (vLLM's cached_tokens). */
  readonly cachedPromptTokens: number;
}

export interface EngineSim {
  /** "127.0.0.1:PORT", the form the routing header uses. */
  readonly address: string;
  readonly port: number;
  stats(): EngineStats;
  /** How many steps ran and how late their results went out against the model's clock (the machine's delay). */
  steps(): StepTiming;
  /** Replaces the fault played by requests without an `x-sim-fault` header; undefined clears it. */
  setFault(fault: Fault | undefined): void;
  /** Aborts every open response and timer and closes the server. Idempotent. */
  close(): Promise<void>;
}

/** The counters the server keeps; `queued` and `running` are read from the step loop. */
type Counters = { -readonly [K in Exclude<keyof EngineStats, "queued" | "running" | "byPath">]: number } & {
  byPath: Record<string, number>;
};

/** Starts an OpenAI-compatible engine simulator on 127.0.0.1. */
export async function startEngineSim(options: EngineSimOptions = {}): Promise<EngineSim> {
  const config = resolveOptions(options);
  const engine = new StepLoop(config.model);
  const startedAt = Math.floor(Date.now() / 1000);
  const open = new Set<AbortController>();
  const counters: Counters = {
    received: 0, inFlight: 0, hanging: 0, completed: 0, errored: 0, aborted: 0,
    byPath: {}, promptTokens: 0, completionTokens: 0, cachedPromptTokens: 0,
  };
  let generations = 0;
  let fault = config.fault;
  let address = "";

  const server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://engine-sim").pathname;
    const controller = new AbortController();
    const outcome: GenerationOutcome = { usage: undefined, cachedTokens: 0, failed: false };
    counters.received++;
    counters.inFlight++;
    counters.byPath[path] = (counters.byPath[path] ?? 0) + 1;
    open.add(controller);
    // `close` fires once per response, finished or cut short: the single place to settle it.
    res.on("close", () => {
      controller.abort(new Error("response closed"));
      open.delete(controller);
      counters.inFlight--;
      if (!res.writableFinished) counters.aborted++;
      else if (outcome.failed || res.statusCode >= 400) counters.errored++;
      else {
        counters.completed++;
        counters.promptTokens += outcome.usage?.prompt_tokens ?? 0;
        counters.completionTokens += outcome.usage?.completion_tokens ?? 0;
        counters.cachedPromptTokens += outcome.cachedTokens;
      }
    });
    res.setHeader(ENGINE_HEADER, address);
    const exchange: Exchange = { req, res, path, signal: controller.signal, outcome };
    route(exchange).catch((error: unknown) => fail(exchange, error));
  });

  async function route(exchange: Exchange): Promise<void> {
    const { req, res, path } = exchange;
    const endpoint = ENDPOINTS[path];
    if (endpoint !== undefined) {
      if (req.method !== "POST") throw new RequestError(405, `${path} only accepts POST`);
      return serveGeneration(exchange, endpoint);
    }
    if (path === "/health" || path === "/v1/models") {
      if (req.method !== "GET") throw new RequestError(405, `${path} only accepts GET`);
      if (path === "/health") res.writeHead(200, { "content-length": 0 }).end();
      else sendJson(res, 200, modelList(config.models ?? [], startedAt));
      return;
    }
    throw new RequestError(404, `no route for ${path}`);
  }

  async function serveGeneration(exchange: Exchange, endpoint: Endpoint): Promise<void> {
    const { req, res } = exchange;
    const body = await readBody(req);
    const requestFault = faultOf(req) ?? fault;
    if (requestFault?.kind === "status") {
      return sendJson(res, requestFault.status, errorBody(requestFault.status, FAULT_MESSAGE));
    }
    const request = parseGenerationRequest(endpoint, body);
    if (config.models !== undefined && !config.models.includes(request.model)) {
      throw new RequestError(404, `The model \`${request.model}\` does not exist.`, "model");
    }
    const wanted = request.maxTokens ?? config.defaultMaxTokens;
    const outputTokens = Math.min(wanted, config.maxTokensLimit);
    // Without a limit in the request the default-length answer "ends by itself"; an answer cut
    // by any limit (the request's or the engine's cap) stops for length, as vLLM reports it.
    const finishReason = request.maxTokens === undefined && outputTokens === wanted ? "stop" : "length";
    const plan = { id: `g${(generations += 1)}`, request, outputTokens, finishReason, fault: requestFault } as const;
    const hanging = requestFault?.kind === "hang";
    if (hanging) counters.hanging++;
    try {
      await generate(plan, res, engine, exchange.signal, exchange.outcome);
    } finally {
      if (hanging) counters.hanging--;
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.port, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  address = `127.0.0.1:${port}`;

  let closing: Promise<void> | undefined;
  return {
    address,
    port,
    stats: () => ({ ...counters, queued: engine.waiting, running: engine.running, byPath: { ...counters.byPath } }),
    steps: () => engine.steps,
    setFault: (next) => {
      fault = next;
    },
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        for (const controller of open) controller.abort(new Error("engine simulator closed"));
        engine.close();
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

const ENDPOINTS: Readonly<Record<string, Endpoint>> = {
  "/v1/chat/completions": "chat",
  "/v1/completions": "completion",
};

interface Exchange {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly path: string;
  readonly signal: AbortSignal;
  readonly outcome: GenerationOutcome;
}

function faultOf(req: IncomingMessage): Fault | undefined {
  const header = req.headers[FAULT_HEADER];
  if (header === undefined) return undefined;
  try {
    return parseFault(Array.isArray(header) ? header.join(",") : header);
  } catch (error) {
    throw new RequestError(400, (error as Error).message);
  }
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/** Settles a request whose handling threw: refused requests get an error body, the rest are cut. */
function fail({ res, signal }: Exchange, error: unknown): void {
  if (signal.aborted || res.headersSent) {
    // Client gone or simulator closing (generation aborted), or too late for a status: cut it.
    res.destroy();
  } else if (error instanceof RequestError) {
    sendJson(res, error.status, errorBody(error.status, error.message, error.param));
  } else {
    console.error("engine-sim: unexpected error", error);
    sendJson(res, 500, errorBody(500, "engine simulator internal error"));
  }
}
