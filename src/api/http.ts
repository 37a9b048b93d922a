import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { LoadStore } from "../load/store.js";
import type { Logger } from "../log.js";
import type { PoolDirectory } from "../pools/pools.js";
import { ErrorCode, sendEnvelope } from "./envelope.js";
import type { Metrics } from "./metrics.js";

export interface HttpApiOptions {
  host: string;
  port: number;
  store: LoadStore;
  directory: () => PoolDirectory;
  metrics: Metrics;
  /** True once config is loaded and every listener is up. */
  ready: () => boolean;
  log: Logger;
}

/** One engine in the metadata-center `GET /v1/load/stats` shape, plus our own numbers. */
interface EngineStats {
  ip: string;
  port: number;
  endpoint: string;
  queued_req_num: number;
  prompt_length: number;
  prefill_req_num: number;
  tokens_held: number;
  updated_time: number;
}

function splitAddress(endpoint: string): { ip: string; port: number } {
  const colon = endpoint.lastIndexOf(":");
  return { ip: endpoint.slice(0, colon).replace(/^\[|\]$/g, ""), port: Number(endpoint.slice(colon + 1)) };
}

/** The HTTP side: the metadata-center v1 load API and health endpoints. */
export class HttpApi {
  private readonly server: Server;
  port = 0;

  constructor(private readonly options: HttpApiOptions) {
    this.server = createServer((request, response) => {
      this.route(request, response).catch((error: unknown) => {
        options.log.error({ err: error, url: request.url }, "http handler failed");
        if (!response.headersSent) {
          sendEnvelope(request, response, 500, null, { code: ErrorCode.internal, message: "internal server error", reason: String(error) });
        }
      });
    });
  }

  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.options.port, this.options.host, () => {
        const address = this.server.address();
        this.port = typeof address === "object" && address !== null ? address.port : this.options.port;
        resolve();
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async route(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? "/", "http://localhost");
    const key = `${request.method ?? "GET"} ${url.pathname}`;
    switch (key) {
      case "GET /healthz":
        return this.plain(response, 200, "ok");
      case "GET /readyz":
        return this.options.ready() ? this.plain(response, 200, "ready") : this.plain(response, 503, "not ready");
      case "GET /metrics": {
        const text = await this.options.metrics.text();
        response.writeHead(200, { "content-type": this.options.metrics.contentType });
        response.end(text);
        return;
      }
      case "GET /v1/load/stats":
        return this.loadStats(request, response, url.searchParams.get("cluster"));
      default:
        sendEnvelope(request, response, 404, null, { code: ErrorCode.invalidInput, message: "not found", reason: `no route for ${key}` });
    }
  }

  private async loadStats(request: IncomingMessage, response: ServerResponse, cluster: string | null): Promise<void> {
    if (cluster === null || cluster === "") {
      return sendEnvelope(request, response, 400, null, {
        code: ErrorCode.invalidInput,
        message: "invalid input parameters",
        reason: "query parameter 'cluster' is required",
      });
    }
    const pool = this.options.directory().named(cluster);
    const active = await this.options.store.enginesOf(cluster);
    if (pool === undefined && active.length === 0) return sendEnvelope(request, response, 200, null);
    const engines = [...new Set([...(pool?.endpoints ?? []), ...active])];
    const loads = await this.options.store.loads(engines);
    const data: EngineStats[] = engines.map((endpoint) => {
      const load = loads.get(endpoint);
      return {
        ...splitAddress(endpoint),
        endpoint,
        queued_req_num: load?.requests ?? 0,
        prompt_length: load?.prefillTokens ?? 0,
        prefill_req_num: load?.prefillRequests ?? 0,
        tokens_held: load?.tokensHeld ?? 0,
        updated_time: (load?.updatedAt ?? 0) * 1_000_000,
      };
    });
    sendEnvelope(request, response, 200, data);
  }

  private plain(response: ServerResponse, status: number, text: string): void {
    response.writeHead(status, { "content-type": "text/plain" });
    response.end(text);
  }
}
