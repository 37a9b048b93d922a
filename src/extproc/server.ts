import { Server, ServerCredentials, status, type ServerDuplexStream } from "@grpc/grpc-js";
import { HealthImplementation, type ServingStatus } from "grpc-health-check";
import {
  ExternalProcessorService,
  type ProcessingRequest,
  type ProcessingResponse,
} from "../gen/envoy/service/ext_proc/v3/external_processor.js";
import type { Logger } from "../log.js";
import { flowControlled } from "./backpressure.js";
import { freeWhenDone, http2StreamOf } from "./call-stream.js";
import { carry, ConnectionRotation, STREAMS_PER_CONNECTION } from "./connection-rotation.js";
import { ExtProcExchange, type ExchangeSettings } from "./exchange.js";
import { StreamLimit } from "./stream-limit.js";
import type { TlsListener } from "./tls.js";
import type { InferenceExchange } from "../inference/lifecycle.js";
import { ListenError } from "../listen-error.js";

/** How long shutdown waits for the releases of ended exchanges: a store that never answers must not keep the process from exiting. */
const RELEASE_WAIT_MS = 5000;

/** The gRPC health services Envoy and Kubernetes probe (GIE convention). */
const HEALTH_SERVICES = ["", "liveness", "readiness", "envoy.service.ext_proc.v3.ExternalProcessor"] as const;
/** Draining: no new traffic, but alive (liveness and the overall status stay SERVING). */
const TRAFFIC_SERVICES = ["readiness", "envoy.service.ext_proc.v3.ExternalProcessor"] as const;

export interface ExtProcServerOptions {
  host: string;
  port: number;
  /** TLS for the ext_proc port (see tls.ts), else plaintext; the health listener is always plaintext, as the kubelet probes it. */
  tls: TlsListener | undefined;
  /** A second listener carrying only gRPC health, on its own host; the ext_proc port serves health too. */
  healthHost: string;
  healthPort: number;
  settings: ExchangeSettings;
  /** ext_proc streams open at once; more are refused with RESOURCE_EXHAUSTED. */
  maxStreams: number;
  /** Largest gRPC message either way (a BUFFERED body arrives in one). */
  maxMessageBytes: number;
  /** One inference exchange per ext_proc stream. */
  newExchange: () => InferenceExchange;
  log: Logger;
  /** Streams a connection carries before it is retired (see connection-rotation.ts). */
  streamsPerConnection?: number;
}

type ProcessCall = ServerDuplexStream<ProcessingRequest, ProcessingResponse>;

const bind = (server: Server, address: string, credentials: ServerCredentials): Promise<number> =>
  new Promise((resolve, reject) => server.bindAsync(address, credentials, (error, port) => (error ? reject(error) : resolve(port))));

const hostPort = (host: string, port: number): string => (host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`);

/** The ext_proc gRPC server: one `Process` stream per HTTP exchange. */
export class ExtProcServer {
  private readonly server: Server;
  private readonly healthServer = new Server();
  private readonly health = new HealthImplementation(
    Object.fromEntries(HEALTH_SERVICES.map((service) => [service, "NOT_SERVING" as ServingStatus])),
  );
  /** Open streams and their exchanges: at shutdown each still open ends with outcome `shutdown`. */
  private readonly open = new Map<ProcessCall, { exchange: ExtProcExchange; inference: InferenceExchange }>();
  private readonly rotation: ConnectionRotation;
  private readonly streamLimit: StreamLimit;
  /** Releases still in flight of exchanges whose streams have closed. */
  private readonly settling = new Set<Promise<void>>();
  port = 0;
  healthPort = 0;

  constructor(private readonly options: ExtProcServerOptions) {
    this.server = new Server({
      "grpc.max_receive_message_length": options.maxMessageBytes,
      "grpc.max_send_message_length": options.maxMessageBytes,
    });
    this.streamLimit = new StreamLimit(options.maxStreams, options.log);
    this.rotation = new ConnectionRotation(options.streamsPerConnection ?? STREAMS_PER_CONNECTION, (missing) =>
      options.log.warn(
        missing === "session"
          ? "cannot see the HTTP/2 connection of a stream; connections will not be rotated"
          : "cannot write the HTTP/2 shutdown notice; a retired connection may refuse streams already on their way",
      ),
    );
    this.server.addService(ExternalProcessorService, { process: (call: ProcessCall) => this.process(call) });
    this.health.addToServer(this.server);
    this.health.addToServer(this.healthServer);
  }

  async start(): Promise<void> {
    const { tls, host, port, healthHost, healthPort } = this.options;
    try {
      if (tls === undefined) this.port = await bind(this.server, hostPort(host, port), ServerCredentials.createInsecure());
      else {
        const injector = this.server.createConnectionInjector(ServerCredentials.createInsecure());
        this.port = await tls.listen(host, port, (socket) => injector.injectConnection(carry(socket)));
      }
    } catch (error) {
      throw new ListenError("ext_proc (gRPC)", host, port, error);
    }
    try {
      this.healthPort = await bind(this.healthServer, hostPort(healthHost, healthPort), ServerCredentials.createInsecure());
    } catch (error) {
      throw new ListenError("gRPC health", healthHost, healthPort, error);
    }
    this.setHealth("SERVING", HEALTH_SERVICES);
  }

  private setHealth(status: ServingStatus, services: readonly string[]): void {
    for (const service of services) this.health.setStatus(service, status);
  }

  /**
   * Stops taking new streams and lets open ones finish; after `graceMs` the rest end with outcome
   * `shutdown` (never held against their engines) and their streams are cancelled. Resolves once
   * every exchange's release is done, or RELEASE_WAIT_MS after the grace (their entries then expire by TTL).
   */
  async shutdown(graceMs: number): Promise<void> {
    this.setHealth("NOT_SERVING", TRAFFIC_SERVICES);
    this.options.tls?.stop();
    const drained = new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        if (this.open.size > 0) this.options.log.warn({ open: this.open.size }, "grace period over; ending open streams");
        for (const { exchange } of [...this.open.values()]) exchange.shutdown();
        this.server.forceShutdown();
        resolve();
      }, graceMs);
    });
    await Promise.race([drained, timedOut]);
    clearTimeout(timer);
    await this.releasesDone();
    this.healthServer.forceShutdown();
  }

  private async releasesDone(): Promise<void> {
    if (this.settling.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const gaveUp = new Promise<"gave up">((resolve) => (timer = setTimeout(() => resolve("gave up"), RELEASE_WAIT_MS)));
    const done = await Promise.race([Promise.all(this.settling), gaveUp]);
    clearTimeout(timer);
    if (done === "gave up") this.options.log.warn({ pending: this.settling.size }, "releases not done at exit; the store's TTL will expire them");
  }

  private process(call: ProcessCall): void {
    const release = this.streamLimit.admit(call);
    if (release === undefined) return;
    const streamEnded = this.rotation.track(call);
    const stream = http2StreamOf(call);
    const inference = this.options.newExchange();
    const exchange = new ExtProcExchange(
      {
        write: flowControlled(call).write,
        abort: (code, message) => call.emit("error", { code: status[code], details: message }),
      },
      inference,
      this.options.settings,
      this.options.log,
    );
    this.open.set(call, { exchange, inference });
    const ended = (): void => {
      if (!this.open.delete(call)) return;
      release();
      streamEnded();
      exchange.onStreamEnd();
      freeWhenDone(stream);
      const settled = inference.settled();
      this.settling.add(settled);
      void settled.then(() => this.settling.delete(settled));
    };
    call.on("data", (message: ProcessingRequest) => exchange.onMessage(message));
    call.on("end", () => {
      ended();
      call.end();
    });
    call.on("cancelled", ended);
    call.on("error", ended);
  }
}
