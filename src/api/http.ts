import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import type { LoadStore } from "../load/store.js";
import type { Logger } from "../log.js";
import type { PoolDirectory } from "../pools/pools.js";
import type { PickHistory } from "../scheduling/pick-history.js";
import type { Picker } from "../scheduling/picker.js";
import { WriteAccess } from "./access.js";
import { BodyError, readJson, type JsonBody } from "./body.js";
import { DASHBOARD_PAGE, DASHBOARD_POLICY } from "./dashboard.js";
import { poolsView } from "./debug-view.js";
import { describeError, ErrorCode, internalError, rawEnvelope, sendEnvelope } from "./envelope.js";
import { engineStats, poolEngines } from "./load-snapshot.js";
import { LoadWrites, type WriteResult } from "./load-writes.js";
import { setLogLevel } from "./log-level.js";
import type { Metrics } from "./metrics.js";
import { picksView, readLimit } from "./picks-view.js";
import { parseTarget, type RequestTarget } from "./target.js";
import { invalidInput } from "./validation.js";
import { ListenError } from "../listen-error.js";

/** Route labels for the HTTP metrics; any other path is "other", so scanners cannot explode the label set. */
const ROUTES = new Set(["/healthz", "/readyz", "/metrics", "/v1/load/stats", "/v1/load/prompt", "/v1/load/pick", "/log/level", "/debug/pools", "/dashboard", "/debug/picks"]);

/** The write API's payloads are a few hundred bytes; anything near this is not a real caller. */
const MAX_BODY_BYTES = 64 * 1024;

export interface HttpApiOptions {
  host: string;
  port: number;
  /** Bearer token for the mutating endpoints when `host` is not loopback. */
  token: string | undefined;
  store: LoadStore;
  directory: () => PoolDirectory;
  picker: () => Picker;
  /** The last picks explained, for `GET /debug/picks`. */
  picks: PickHistory;
  metrics: Metrics;
  /** True once config is loaded and every listener is up. */
  ready: () => boolean;
  log: Logger;
}

/** The HTTP side: the metadata-center v1 load API and health endpoints. */
export class HttpApi {
  private readonly server: Server;
  private readonly writes: LoadWrites;
  private readonly access: WriteAccess;
  port = 0;

  constructor(private readonly options: HttpApiOptions) {
    this.writes = new LoadWrites({
      store: options.store,
      directory: options.directory,
      picker: options.picker,
      log: options.log,
      observeLatency: (milliseconds) => options.metrics.observeReplicationLatency(milliseconds),
    });
    this.access = new WriteAccess(options.host, options.token);
    this.server = createServer((request, response) => {
      try {
        this.serve(request, response);
      } catch (error) {
        this.fail(request, response, error);
      }
    });
    this.server.on("clientError", (error: NodeJS.ErrnoException, socket: Duplex) => this.refuseUnparsed(error, socket));
  }

  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      const refused = (error: Error): void => reject(new ListenError("the HTTP API", this.options.host, this.options.port, error));
      this.server.once("error", refused);
      this.server.listen(this.options.port, this.options.host, () => {
        this.server.off("error", refused);
        // Later listener errors (e.g. accept failing for lack of file descriptors) must not end the process.
        this.server.on("error", (error) => this.options.log.error({ err: error }, "http listener error"));
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

  /** One request: routed, timed and counted; whatever fails inside it fails this request only. */
  private serve(request: IncomingMessage, response: ServerResponse): void {
    const started = performance.now();
    const target = parseTarget(request.url ?? "/");
    const route = target.ok && ROUTES.has(target.path) ? target.path : "other";
    response.once("finish", () => {
      try {
        this.options.metrics.observeHttp(request.method ?? "GET", route, response.statusCode, (performance.now() - started) * 1000);
      } catch (error) {
        this.options.log.error({ reason: describeError(error), url: request.url }, "http metrics not recorded");
      }
    });
    this.route(request, response, target).catch((error: unknown) => this.fail(request, response, error));
  }

  /** One log line, and a 500 naming the cause if the answer has not begun (else the connection is cut). */
  private fail(request: IncomingMessage, response: ServerResponse, error: unknown): void {
    const reason = describeError(error);
    const gone = request.socket.destroyed;
    try {
      // A client that left mid-request (e.g. before its body ended) is no fault of ours.
      if (gone) this.options.log.debug({ reason, method: request.method, url: request.url }, "http client left before its answer");
      else this.options.log.error({ reason, method: request.method, url: request.url }, "http request failed");
    } catch {
      // A logger that throws must not stop the answer.
    }
    try {
      if (gone || response.headersSent) response.destroy();
      else sendEnvelope(request, response, 500, null, internalError(error));
    } catch {
      response.destroy();
    }
  }

  /** Bytes Node's HTTP parser refused: a 400 envelope (431, 408 where Node would), as long as nothing was written on the connection. */
  private refuseUnparsed(error: NodeJS.ErrnoException, socket: Duplex & { bytesWritten?: number }): void {
    try {
      if (error.code === "ECONNRESET" || !socket.writable || (socket.bytesWritten ?? 0) > 0) {
        socket.destroy();
        return;
      }
      const status = error.code === "HPE_HEADER_OVERFLOW" ? 431 : error.code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400;
      const reason = `the request could not be parsed: ${error.code ?? "error"} ${describeError(error)}`;
      socket.end(rawEnvelope(status, invalidInput(reason)), () => socket.destroy());
    } catch {
      socket.destroy();
    }
  }

  private async route(request: IncomingMessage, response: ServerResponse, target: RequestTarget): Promise<void> {
    const method = request.method ?? "GET";
    if (!target.ok) return sendEnvelope(request, response, 400, null, invalidInput(target.reason));
    const key = `${method} ${target.path}`;
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
        return sendEnvelope(request, response, 200, await poolsView(this.options.store, this.options.directory(), this.writes.waitingDeletes, this.options.metrics.traffic()));
      case "GET /dashboard":
        response.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store", "content-security-policy": DASHBOARD_POLICY });
        response.end(DASHBOARD_PAGE);
        return;
      case "GET /debug/picks": {
        const limit = readLimit(target.query().get("limit"));
        if (!limit.ok) return sendEnvelope(request, response, 400, null, limit.error);
        return sendEnvelope(request, response, 200, picksView(this.options.picks, limit.limit));
      }
      case "GET /v1/load/stats":
        return this.loadStats(request, response, target.query().get("cluster"));
      case "POST /v1/load/stats":
        return this.write(request, response, (body) => this.writes.add(body));
      case "POST /v1/load/pick":
        return this.write(request, response, (body) => this.writes.pick(body));
      case "DELETE /v1/load/prompt":
        return this.write(request, response, (body) => this.writes.deletePrompt(body));
      case "DELETE /v1/load/stats":
        return this.write(request, response, (body) => this.writes.deleteStats(body));
      case "POST /log/level":
        return this.write(request, response, (body) => setLogLevel(this.options.log, body.value));
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
    if (directory.named(cluster) === undefined && engines.size === 0) return sendEnvelope(request, response, 200, null);
    sendEnvelope(request, response, 200, [...engines].map(([endpoint, load]) => engineStats(endpoint, load)));
  }

  /** Read the JSON body, apply the change, answer in the envelope. */
  private async write(
    request: IncomingMessage,
    response: ServerResponse,
    apply: (body: JsonBody) => WriteResult | Promise<WriteResult>,
  ): Promise<void> {
    let body: JsonBody;
    try {
      body = await readJson(request, MAX_BODY_BYTES);
    } catch (error) {
      if (!(error instanceof BodyError)) throw error;
      // An oversized body is left unread: close the connection rather than drain it.
      response.setHeader("connection", "close");
      return sendEnvelope(request, response, 400, null, invalidInput(error.message));
    }
    const result = await apply(body);
    if (result.ok) sendEnvelope(request, response, 200, result.data ?? null);
    else sendEnvelope(request, response, result.status, result.data ?? null, result.error);
  }

  private plain(response: ServerResponse, status: number, text: string): void {
    response.writeHead(status, { "content-type": "text/plain" });
    response.end(text);
  }
}
