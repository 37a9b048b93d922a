import { randomBytes } from "node:crypto";
import { HttpApi } from "./api/http.js";
import { Metrics } from "./api/metrics.js";
import type { Config } from "./config/schema.js";
import { HeldBodies } from "./extproc/held-bodies.js";
import { ExtProcServer } from "./extproc/server.js";
import { extProcTransport } from "./extproc/tls.js";
import { InferenceExchange, type ExchangeEvents } from "./inference/lifecycle.js";
import { RequestParser } from "./inference/request-parser.js";
import { TokenizerRegistry } from "./inference/tokenizers/registry.js";
import { MemoryLoadStore } from "./load/memory-store.js";
import { openLoadStore } from "./load/open.js";
import type { LoadStore } from "./load/store.js";
import type { Logger } from "./log.js";
import { DnsPoolWatcher } from "./pools/dns.js";
import { EngineHealth } from "./pools/health.js";
import { PoolDirectory } from "./pools/pools.js";
import { tcpProbe } from "./pools/probe.js";
import { PickHistory } from "./scheduling/pick-history.js";
import { Picker } from "./scheduling/picker.js";
import { EngineSteps } from "./scheduling/engine-steps.js";
import { PrefixIndex } from "./scheduling/prefix-index.js";
import { TtftPredictor } from "./scheduling/ttft-predictor.js";
import { PrefixSharing } from "./scheduling/prefix-sharing.js";
import { PickQueue } from "./scheduling/queue.js";

export interface Sidecar {
  readonly store: LoadStore;
  readonly ports: { extproc: number; health: number; http: number };
  /** Settles once the pools' tokenizer files are loaded (the estimate prices their requests until then); rejects naming a bad file. */
  readonly tokenizers: Promise<void>;
  /** Swap in a reloaded config: pools and weights take effect for the next pick, tokenizers once loaded. */
  reload(config: Config): void;
  /** Stop taking streams, let open ones finish within `graceMs`, close everything (tokenizer worker threads too). */
  stop(graceMs: number): Promise<void>;
}

/** What a reload changes; every other section takes effect only after a restart. */
const RELOADABLE = ["pools", "scheduling", "log"] as const satisfies readonly (keyof Config)[];

const restartOnly = (a: Config, b: Config): string[] =>
  (Object.keys(a) as (keyof Config)[]).filter(
    (key) => !(RELOADABLE as readonly string[]).includes(key) && JSON.stringify(a[key]) !== JSON.stringify(b[key]),
  );

/** Larger request bodies are parsed off the event loop: 512 KiB of chat turns parse in ~5–10 ms, 16 MiB in ~170 ms. */
const PARSE_OFF_THREAD_ABOVE_BYTES = 512 * 1024;

/** The longest prompt text any pool's tokenizer counts whole. */
const largestWholeText = (config: Config): number =>
  Math.max(config.tokenizer.countWholeUpTo, ...config.pools.map((pool) => (pool.tokenizer === "o200k" ? 0 : pool.tokenizer.countWholeUpTo)));

/** Builds and starts every part of the sidecar from one config. */
export async function startSidecar(initial: Config, log: Logger, given?: LoadStore): Promise<Sidecar> {
  let config = initial;
  // First: TLS files that cannot be used stop the start before anything else runs.
  const transport = await extProcTransport(config.extproc.tls, log);
  const shared = given === undefined ? await openLoadStore(config, log) : undefined;
  const store: LoadStore = given ?? shared?.store ?? new MemoryLoadStore();
  // Survives reloads: an engine's record does not depend on which config listed it.
  const health = new EngineHealth(
    config.scheduling,
    Date.now,
    (engine, seconds) => log.warn({ engine, seconds }, "engine ejected after consecutive errors"),
    tcpProbe(config.scheduling.probeTimeoutSeconds * 1000),
  );
  /** DNS pools' engines as last resolved, by pool name. */
  const resolved = new Map<string, string[]>();
  const directoryOf = (pools: Config["pools"]): PoolDirectory =>
    new PoolDirectory(pools.map((pool) => (pool.dns === undefined ? pool : { ...pool, endpoints: resolved.get(pool.name) ?? [] })));
  /** A pool listed with no engine (and no DNS name to find them) answers every request 503: worth a word at start. */
  const warnEmptyPools = (pools: Config["pools"]): void => {
    for (const pool of pools) {
      if (pool.dns === undefined && pool.endpoints.length === 0) log.warn({ pool: pool.name, models: pool.models }, "pool has no engines: its models' requests are answered 503");
    }
  };
  warnEmptyPools(config.pools);
  let directory = directoryOf(config.pools);
  /** Once serving, engines that appear (reload, DNS) warm up; the first ones need not. */
  let serving = false;
  const setDirectory = (next: PoolDirectory): void => {
    const known = new Set(directory.pools.flatMap((pool) => pool.endpoints));
    if (serving) for (const pool of next.pools) for (const engine of pool.endpoints) if (!known.has(engine)) health.added(engine);
    directory = next;
  };
  let watchers: DnsPoolWatcher[] = [];
  const watchDns = (pools: Config["pools"]): Promise<void> => {
    for (const watcher of watchers) watcher.stop();
    watchers = pools.flatMap((pool) =>
      pool.dns === undefined
        ? []
        : [
            new DnsPoolWatcher(pool.name, pool.dns, (name, engines) => {
              resolved.set(name, engines);
              setDirectory(directoryOf(config.pools));
            }, log),
          ],
    );
    return Promise.all(watchers.map((watcher) => watcher.start())).then(() => undefined);
  };
  // Survives reloads too: what engines hold does not change with the config.
  const prefixes = new PrefixIndex();
  // With a shared store, the prompt blocks each replica sends to an engine reach every replica's index.
  const sharing =
    shared === undefined ? undefined : new PrefixSharing(prefixes, shared.broadcast("prefix-blocks"), (error) => log.debug({ err: error }, "sharing prefix blocks failed"));
  // So do the last picks explained: a reload resizes them, keeping the newest.
  const picks = new PickHistory(config.scheduling.debugPicks, log);
  // And the pools' TTFT models, learnt from the traffic.
  const ttft = new TtftPredictor(prefixes, (predictedMs, observedMs) => metrics.ttftForecast(predictedMs, observedMs));
  // And each engine's step rhythm, from its streams.
  const steps = new EngineSteps();
  let picker = new Picker(store, () => directory, config.scheduling, { availability: health, prefixes, ttft, steps, history: picks });
  const queue = new PickQueue(() => picker, config.scheduling.queue, {
    held: (pool, count) => metrics.observeQueue(pool, count),
    waited: (seconds) => metrics.observeQueueWait(seconds),
    failed: (error) => log.error({ err: error }, "dispatching held requests failed"),
  });
  const tokens = new TokenizerRegistry(config.tokenizer, () => directory, (error) =>
    log.error({ reason: error.message }, "tokenizer lost; its pools are priced by the estimate until a reload names its file"),
  );
  const tokenizers = tokens.configure(config.pools);
  const parser = new RequestParser({
    offThreadAboveBytes: PARSE_OFF_THREAD_ABOVE_BYTES,
    wholeUpToCost: () => largestWholeText(config),
    includeUsage: config.inference.forceIncludeUsage,
    lost: (error) => log.warn({ reason: error.message }, "request parsing thread lost; the bodies it held are parsed inline, the next large one starts a new thread"),
  });
  const metrics = new Metrics({ store, directory: () => directory, storeFallback: () => shared?.fallback === true });
  // A first token (out of prefill, seen or estimated) or a release here may free an engine a held request waits for.
  const events: ExchangeEvents = {
    picked: (pool, engine, promptTokens) => metrics.picked(pool, engine, promptTokens),
    refused: (reason, pool) => metrics.refused(reason, pool),
    firstToken: (seconds) => {
      metrics.firstToken(seconds);
      queue.wake();
    },
    prefillEstimated: () => {
      metrics.prefillEstimated();
      queue.wake();
    },
    finished: (seconds, outcome) => {
      metrics.finished(seconds, outcome);
      queue.wake();
    },
  };
  // Ledger keys must not collide between sidecars sharing a store, nor across restarts.
  const instance = randomBytes(8).toString("hex");
  let sequence = 0;
  let ready = false;
  /** Observer: count an engine under the model's pool, else the pool that lists it. */
  const observedPool = (engine: string, model: string | undefined): string =>
    directory.forModel(model)?.name ?? directory.pools.find((pool) => pool.endpoints.includes(engine))?.name ?? "unknown";

  const extproc = new ExtProcServer({
    host: config.extproc.host,
    port: config.extproc.port,
    tls: transport.tls,
    healthHost: config.health.host,
    healthPort: config.health.port,
    maxStreams: config.extproc.maxStreams,
    maxMessageBytes: config.extproc.maxMessageBytes,
    settings: {
      assumedModes: config.extproc.assumedBodyModes,
      maxRequestBodyBytes: config.extproc.maxRequestBodyBytes,
      requestBodyTimeoutMs: config.extproc.requestBodyTimeoutSeconds * 1000,
      observePick: (seconds, outcome) => metrics.observePick(seconds, outcome),
      observer: config.role === "observer",
      trustedHeaders: new Set(config.extproc.trustedHeaders),
      heldBodies: new HeldBodies(config.extproc.maxHeldBodyBytes),
    },
    newExchange: () =>
      new InferenceExchange(
        {
          store,
          picker: queue,
          parser,
          tokens,
          health,
          log,
          maxJsonResponseBytes: config.load.maxJsonResponseBytes,
          forceIncludeUsage: config.inference.forceIncludeUsage,
          events,
          steps,
          observe: config.role === "observer" ? observedPool : undefined,
        },
        `${instance}-${(sequence += 1)}`,
      ),
    log,
  });
  const http = new HttpApi({ host: config.http.host, port: config.http.port, token: config.http.token, store, metrics, directory: () => directory, picker: () => picker, picks, ready: () => ready, log });

  await watchDns(config.pools);
  await extproc.start();
  await http.start();
  const sweeper = setInterval(() => {
    // The one log line of a request whose end never came (its lifecycle will not log it again).
    Promise.resolve(
      store.expire(config.load.ttlSeconds * 1000, (reservation) =>
        log.warn({ ...reservation, outcome: "expired", ttlSeconds: config.load.ttlSeconds }, "request expired"),
      ),
    )
      .then((expired) => {
        if (expired > 0) metrics.observeExpired(expired);
      })
      .catch((error: unknown) => log.error({ err: error }, "expiring reservations failed"));
  }, config.load.sweepSeconds * 1000);
  sweeper.unref();
  ready = true;
  serving = true;
  log.info({ extproc: extproc.port, health: extproc.healthPort, http: http.port, pools: config.pools.length }, "metadata-center serving");

  return {
    store,
    ports: { extproc: extproc.port, health: extproc.healthPort, http: http.port },
    tokenizers,
    reload(next) {
      const ignored = [...restartOnly(config, next), ...(["format", "time"] as const).filter((key) => config.log[key] !== next.log[key]).map((key) => `log.${key}`)];
      if (ignored.length > 0) log.warn({ sections: ignored }, "config sections changed that take effect only after a restart");
      health.configure(next.scheduling);
      for (const name of resolved.keys()) if (!next.pools.some((pool) => pool.name === name && pool.dns !== undefined)) resolved.delete(name);
      warnEmptyPools(next.pools);
      setDirectory(directoryOf(next.pools));
      picks.resize(next.scheduling.debugPicks);
      picker = new Picker(store, () => directory, next.scheduling, { availability: health, prefixes, ttft, steps, history: picks });
      queue.configure(next.scheduling.queue);
      tokens.configure(next.pools).catch((error: unknown) => log.error({ reason: (error as Error).message }, "tokenizer not loaded; its pools keep their previous tokenizer"));
      log.level = next.log.level;
      config = { ...config, ...Object.fromEntries(RELOADABLE.map((key) => [key, next[key]])) };
      // Until the new lookups answer, a DNS pool keeps the engines last resolved for its name.
      void watchDns(next.pools);
      log.info({ pools: directory.pools.map((pool) => ({ name: pool.name, engines: pool.endpoints.length })) }, "config reloaded");
    },
    async stop(graceMs) {
      ready = false;
      clearInterval(sweeper);
      queue.close();
      for (const watcher of watchers) watcher.stop();
      await extproc.shutdown(graceMs);
      sharing?.close();
      await shared?.close();
      transport.close();
      await http.close();
      await Promise.all([tokens.close(), parser.close()]);
    },
  };
}
