import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { ExchangeEvents, RefusalReason } from "../inference/lifecycle.js";
import type { EngineSnapshot, LoadStore, Outcome } from "../load/store.js";
import type { PoolDirectory } from "../pools/pools.js";
import { readLoadSnapshot, type LoadSnapshot } from "./load-snapshot.js";
import { version } from "../version.js";
import { SnapshotGauge, type Series } from "./snapshot-gauge.js";

/** Where the scrape-time gauges read the load from. */
export interface LoadSource {
  store: LoadStore;
  directory: () => PoolDirectory;
  /** True while the shared store (Redis) is out and picks come from this sidecar's own view; absent: never. */
  storeFallback?: () => boolean;
}

const tokenBuckets = [16, 64, 256, 1024, 4096, 16_384, 65_536, 262_144];
const secondBuckets = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

/**
 * The sidecar's Prometheus metrics, one registry per sidecar (tests run several in one process).
 * The hot path only bumps a counter or a histogram per exchange event, never per body chunk;
 * the per-pool and per-engine gauges are read from the store when `/metrics` is scraped, so
 * their cost is paid by the scraper and is independent of the traffic.
 */
export class Metrics implements ExchangeEvents {
  readonly registry = new Registry();
  /** One store read per scrape, shared by every gauge's collect(). */
  private scrape: Promise<LoadSnapshot> | undefined;
  /** The scrape in progress, if any: the next one starts after it. */
  private scrapes: Promise<unknown> = Promise.resolve();

  /** Body end → headers reply, inside the sidecar: parse, count tokens, pick and reserve. */
  private readonly pickLatency = new Histogram({
    name: "metadata_center_pick_latency_seconds",
    help: "Time from the end of the request body to the routing reply, in the sidecar",
    labelNames: ["outcome"] as const,
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1],
    registers: [this.registry],
  });
  private readonly picks = new Counter({
    name: "metadata_center_picks_total",
    help: "Picks by pool, chosen engine (empty when none) and outcome (routed | no_engine)",
    labelNames: ["pool", "engine", "outcome"] as const,
    registers: [this.registry],
  });
  private readonly refusals = new Counter({
    name: "metadata_center_refusals_total",
    help: "Requests answered by the sidecar instead of routed, by reason",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  private readonly ttft = new Histogram({
    name: "metadata_center_time_to_first_token_seconds",
    help: "From the request reaching the sidecar to the first response body chunk",
    buckets: secondBuckets,
    registers: [this.registry],
  });
  private readonly ttftError = new Histogram({
    name: "metadata_center_ttft_prediction_error_seconds",
    help: "How far each pick's predicted time to first token on its engine was from the first token's (absolute)",
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  private readonly prefillEstimates = new Counter({
    name: "metadata_center_prefill_estimates_total",
    help: "Non-streaming requests whose prefill was taken as over at their predicted first token (a JSON body shows none before its end)",
    registers: [this.registry],
  });
  private readonly duration = new Histogram({
    name: "metadata_center_request_duration_seconds",
    help: "From the request reaching the sidecar to its release, by outcome",
    labelNames: ["outcome"] as const,
    buckets: secondBuckets,
    registers: [this.registry],
  });
  private readonly promptTokens = new Histogram({
    name: "metadata_center_prompt_tokens",
    help: "Prompt tokens per routed request, as priced for its pick",
    buckets: tokenBuckets,
    registers: [this.registry],
  });
  private readonly queued = new Gauge({
    name: "metadata_center_queue_requests",
    help: "Requests held while every engine of their pool is at its limit, by pool",
    labelNames: ["pool"] as const,
    registers: [this.registry],
  });
  private readonly queueWait = new Histogram({
    name: "metadata_center_queue_wait_seconds",
    help: "How long each held request waited, dispatched or not",
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  private readonly expired = new Counter({
    name: "metadata_center_expired_total",
    help: "Reservations never closed and dropped after load.ttlSeconds",
    registers: [this.registry],
  });
  private readonly httpStatus = new Counter({
    name: "http_request_status_code_total",
    help: "HTTP API requests by route, method and status code (metadata-center name)",
    labelNames: ["url", "method", "status_code"] as const,
    registers: [this.registry],
  });
  private readonly httpDuration = new Histogram({
    name: "http_request_duration_us",
    help: "HTTP API request duration in microseconds (metadata-center name)",
    labelNames: ["method", "url"] as const,
    buckets: [50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 100_000, 1_000_000],
    registers: [this.registry],
  });

  /** The Go service's: how old each write's `timestamp` was when it arrived (its buckets: 1, 2, 4 … 128 ms). */
  private readonly replicationLatency = new Histogram({
    name: "replication_latency_ms",
    help: "Age of each v1 write's timestamp on arrival, in milliseconds (metadata-center name)",
    buckets: [1, 2, 4, 8, 16, 32, 64, 128],
    registers: [this.registry],
  });

  private readonly httpSeries = new Map<string, { status: { inc(): void }; duration: { observe(value: number): void } }>();

  /**
   * `scrapeTimeoutMs`: a store read that takes longer fails its scrape, so a store that hangs
   * cannot hold every later scrape behind it (10 s: Prometheus's default scrape timeout).
   */
  constructor(
    private readonly source: LoadSource,
    private readonly scrapeTimeoutMs = 10_000,
  ) {
    const registers = [this.registry];
    // The process's own: CPU, memory, handles, GC, and the event loop's delay (every pick waits behind it), 10 ms resolution.
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 10 });
    const poolGauge = (name: string, help: string, value: (engines: Map<string, EngineSnapshot>) => number): void => {
      const gauge: Gauge<"model_name"> = new Gauge({
        name,
        help,
        labelNames: ["model_name"] as const,
        registers,
        collect: async () => {
          const snapshot = await this.snapshot();
          gauge.reset();
          for (const [pool, engines] of snapshot.pools) gauge.set({ model_name: pool }, value(engines));
        },
      });
    };
    const engineGauge = (name: string, help: string, labels: "go" | "ours", value: (load: EngineSnapshot) => number): void => {
      const labelNames = labels === "go" ? ["model_name", "engine_ip"] : ["pool", "engine"];
      new SnapshotGauge({ name, help, labelNames, registers }, async () => {
        const snapshot = await this.snapshot();
        const series: Series[] = [];
        for (const [pool, engines] of snapshot.pools) {
          for (const [engine, load] of engines) series.push({ labels: [pool, engine], value: value(load) });
        }
        return series;
      });
    };
    // The Go service's names; engine_ip is the engine key (ip:port, or the bare IP the API reported).
    poolGauge("model_engine_count", "Engines per pool (metadata-center cluster)", (engines) => engines.size);
    engineGauge("queued_num", "Requests in flight per engine (metadata-center name)", "go", (load) => load.requests);
    engineGauge("prompt_length", "Prompt length in prefill per engine (metadata-center name)", "go", (load) => load.prefillTokens);
    engineGauge("metadata_center_engine_requests", "Requests in flight per engine", "ours", (load) => load.requests);
    engineGauge("metadata_center_engine_prefill_requests", "Requests in prefill per engine", "ours", (load) => load.prefillRequests);
    engineGauge("metadata_center_engine_prefill_tokens", "Prompt tokens in prefill per engine", "ours", (load) => load.prefillTokens);
    engineGauge("metadata_center_engine_tokens_held", "Prompt plus generated tokens in flight per engine", "ours", (load) => load.tokensHeld);
    // The Go service's: its version, and 1 while it serves.
    new Gauge({ name: "app_version_info", help: "Version of this metadata-center (metadata-center name)", labelNames: ["version"], registers }).set({ version }, 1);
    new Gauge({ name: "metacenter_node_alive", help: "1 while this metadata-center serves (metadata-center name)", registers }).set(1);
    // Per process by nature: whether this sidecar reaches the shared store.
    const storeFallback: Gauge = new Gauge({
      name: "metadata_center_store_fallback",
      help: "1 while the shared load store (Redis) is out and picks come from this sidecar's own view",
      registers,
      collect: () => storeFallback.set(source.storeFallback?.() === true ? 1 : 0),
    });
    const ledger: Gauge = new Gauge({
      name: "metadata_center_ledger_size",
      help: "Open reservations in the ledger",
      registers,
      collect: async () => ledger.set((await this.snapshot()).ledger),
    });
  }

  observePick(seconds: number, outcome: "routed" | "refused"): void {
    this.pickLatency.observe({ outcome }, seconds);
  }

  /** Running totals for the dashboard, kept beside the histograms so reading them costs nothing. */
  private readonly totals = { picks: 0, firstTokens: 0, ttftSeconds: 0 };

  /** Picks, first tokens and their summed TTFT since start: a reader takes differences over time. */
  traffic(): { picks: number; first_tokens: number; ttft_seconds: number } {
    return { picks: this.totals.picks, first_tokens: this.totals.firstTokens, ttft_seconds: this.totals.ttftSeconds };
  }

  picked(pool: string, engine: string, promptTokens: number): void {
    this.totals.picks += 1;
    this.picks.inc({ pool, engine, outcome: "routed" });
    this.promptTokens.observe(promptTokens);
  }

  refused(reason: RefusalReason, pool: string | undefined): void {
    if (reason === "no_engine_available" && pool !== undefined) this.picks.inc({ pool, engine: "", outcome: "no_engine" });
    this.refusals.inc({ reason });
  }

  firstToken(seconds: number): void {
    this.totals.firstTokens += 1;
    this.totals.ttftSeconds += seconds;
    this.ttft.observe(seconds);
  }

  prefillEstimated(): void {
    this.prefillEstimates.inc();
  }

  /** A pick's TTFT forecast met its first token: both in ms from the pick. */
  ttftForecast(predictedMs: number, observedMs: number): void {
    this.ttftError.observe(Math.abs(observedMs - predictedMs) / 1000);
  }

  finished(seconds: number, outcome: Outcome): void {
    this.duration.observe({ outcome }, seconds);
  }

  observeQueue(pool: string, count: number): void {
    this.queued.set({ pool }, count);
  }

  observeQueueWait(seconds: number): void {
    this.queueWait.observe(seconds);
  }

  observeExpired(count: number): void {
    this.expired.inc(count);
  }

  observeReplicationLatency(milliseconds: number): void {
    this.replicationLatency.observe(milliseconds);
  }

  observeHttp(method: string, url: string, statusCode: number, microseconds: number): void {
    // The label children are looked up once per route, method and status, not hashed per request.
    const key = `${method} ${url} ${statusCode}`;
    let series = this.httpSeries.get(key);
    if (series === undefined) {
      series = { status: this.httpStatus.labels({ url, method, status_code: String(statusCode) }), duration: this.httpDuration.labels({ method, url }) };
      this.httpSeries.set(key, series);
    }
    series.status.inc();
    series.duration.observe(microseconds);
  }

  /**
   * The exposition text, as `registry.metrics()` gives it, built one metric per event-loop turn:
   * with 1,000 engines the whole text took ~9–12 ms of one turn, every ext_proc stream waiting
   * behind it; one metric (1,000 series at most) takes ~1.5 ms. All gauges read one snapshot,
   * so they agree with each other. Scrapes run one after another, each with its own snapshot.
   */
  text(): Promise<string> {
    const next = this.scrapes.then(() => this.render());
    this.scrapes = next.catch(() => undefined);
    return next;
  }

  private async render(): Promise<string> {
    try {
      // The store read gets a turn of its own; every gauge's collect() then shares its result.
      await this.snapshot();
      const parts: string[] = [];
      for (const { name } of this.registry.getMetricsAsArray()) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        parts.push(await this.registry.getSingleMetricAsString(name));
      }
      return `${parts.join("\n\n")}\n`;
    } finally {
      // Whether it worked or failed, the next scrape reads the store afresh.
      this.scrape = undefined;
    }
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private snapshot(): Promise<LoadSnapshot> {
    this.scrape ??= new Promise<LoadSnapshot>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the store read took longer than ${this.scrapeTimeoutMs} ms`)), this.scrapeTimeoutMs).unref();
      readLoadSnapshot(this.source.store, this.source.directory())
        .then(resolve, reject)
        .finally(() => clearTimeout(timer));
    });
    return this.scrape;
  }
}
