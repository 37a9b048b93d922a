import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { LoadStore } from "../load/store.js";
import type { Logger } from "../log.js";
import { splitAddress, type PoolDirectory } from "../pools/pools.js";
import { WriteAccess } from "./access.js";
import { BodyError, readJson } from "./body.js";
import { poolsView } from "./debug-view.js";
import { ErrorCode, sendEnvelope } from "./envelope.js";
import { poolEngines } from "./load-snapshot.js";
import { LoadWrites, type WriteResult } from "./load-writes.js";
import { setLogLevel } from "./log-level.js";
import type { Metrics } from "./metrics.js";
import { invalidInput } from "./validation.js";

/** Route labels for the HTTP metrics; any other path is "other", so scanners cannot explode the label set. */
const ROUTES = new Set(["/healthz", "/readyz", "/metrics", "/v1/load/stats", "/v1/load/prompt", "/log/level", "/debug/pools"]);

/** The write API's payloads are a few hundred bytes; anything near this is not a real caller. */
const MAX_BODY_BYTES = 64 * 1024;

export interface HttpApiOptions {
  host: string;
  port: number;
  /** Bearer token for the mutating endpoints when `host` is not loopback. */
  token: string | undefined;
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

/** The request target's path, and its query parsed only when asked for. */
interface ParsedUrl {
  pathname: string;
  query: () => URLSearchParams;
}

/**
 * `new URL(target, "http://localhost")`'s pathname and searchParams, parsed once per request.
 * A target that is one of the routes, with or without a query, is taken as it stands (WHATWG
 * parsing would leave it unchanged); anything else goes through URL, so odd targets are
 * normalised exactly as before.
 */
function parseUrl(target: string | undefined): ParsedUrl {
  const raw = target ?? "/";
  const mark = raw.indexOf("?");
  const path = mark === -1 ? raw : raw.slice(0, mark);
  if (ROUTES.has(path) && !raw.includes("#")) {
    let query: URLSearchParams | undefined;
    return { pathname: path, query: () => (query ??= new URL(raw, "http://localhost").searchParams) };
  }
  const url = new URL(raw, "http://localhost");
  return { pathname: url.pathname, query: () => url.searchParams };
}


/** The HTTP side: the metadata-center v1 load API and health endpoints. */
export class HttpApi {
  private readonly server: Server;
  private readonly writes: LoadWrites;
  private readonly access: WriteAccess;
  port = 0;

  constructor(private readonly options: HttpApiOptions) {
    this.writes = new LoadWrites(options.store, options.directory);
    this.access = new WriteAccess(options.host, options.token);
    this.server = createServer((request, response) => {
      const started = performance.now();
      const url = parseUrl(request.url);
      response.once("finish", () => {
        const route = ROUTES.has(url.pathname) ? url.pathname : "other";
        options.metrics.observeHttp(request.method ?? "GET", route, response.statusCode, (performance.now() - started) * 1000);
      });
      this.route(request, response, url).catch((error: unknown) => {
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
    this.writes.close();
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async route(request: IncomingMessage, response: ServerResponse, url: ParsedUrl): Promise<void> {
    const method = request.method ?? "GET";
    const key = `${method} ${url.pathname}`;
    if (method !== "GET" && method !== "HEAD" && !this.access.allows(request)) {
      return sendEnvelope(request, response, 401, null, {
        code: ErrorCode.unauthenticated,
        message: "authentication failed",
        reason: "this endpoint needs 'Authorization: Bearer <http.token>'",
      });
    }
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
      case "GET /debug/pools":
        return sendEnvelope(request, response, 200, await poolsView(this.options.store, this.options.directory()));
      case "GET /v1/load/stats":
        return this.loadStats(request, response, url.query().get("cluster"));
      case "POST /v1/load/stats":
        return this.write(request, response, (body) => this.writes.add(body));
      case "DELETE /v1/load/prompt":
        return this.write(request, response, (body) => this.writes.deletePrompt(body));
      case "DELETE /v1/load/stats":
        return this.write(request, response, (body) => this.writes.deleteStats(body));
      case "POST /log/level":
        return this.write(request, response, (body) => setLogLevel(this.options.log, body));
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
    const directory = this.options.directory();
    const engines = await poolEngines(this.options.store, directory, cluster);
    if (directory.named(cluster) === undefined && engines.length === 0) return sendEnvelope(request, response, 200, null);
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

  /** Read the JSON body, apply the change, answer in the envelope. */
  private async write(
    request: IncomingMessage,
    response: ServerResponse,
    apply: (body: unknown) => WriteResult | Promise<WriteResult>,
  ): Promise<void> {
    let body: unknown;
    try {
      body = await readJson(request, MAX_BODY_BYTES);
    } catch (error) {
      if (!(error instanceof BodyError)) throw error;
      // An oversized body is left unread: close the connection rather than drain it.
      response.setHeader("connection", "close");
      return sendEnvelope(request, response, 400, null, invalidInput(error.message));
    }
    const result = await apply(body);
    if (result.ok) sendEnvelope(request, response, 200, null);
    else sendEnvelope(request, response, result.status, null, result.error);
  }

  private plain(response: ServerResponse, status: number, text: string): void {
    response.writeHead(status, { "content-type": "text/plain" });
    response.end(text);
  }
}
