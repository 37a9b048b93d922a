import type { Config } from "../config/schema.js";
import type { Logger } from "../log.js";
import { FailOpenStore } from "./fail-open-store.js";
import { randomUUID } from "node:crypto";
import { RedisBroadcast } from "./redis/broadcast.js";
import { connectionCause, connectRedis } from "./redis/connect.js";
import { SidecarLease } from "./redis/lease.js";
import { RedisLoadStore } from "./redis/redis-store.js";
import type { LoadStore } from "./store.js";

/** Generated tokens and reported usage of one exchange reach Redis at most this often. */
const COALESCE_MS = 100;
/** While Redis is out, it is tried again this often. */
const RETRY_MS = 1000;

export interface SharedLoadStore {
  store: LoadStore;
  /** True while Redis is out and picks come from this sidecar's own view (metadata_center_store_fallback). */
  readonly fallback: boolean;
  /** A pub/sub channel among the replicas, under the key prefix. */
  broadcast(name: string): RedisBroadcast;
  /** Gives the lease up and closes the connections; the shutdown has released what it held. */
  close(): Promise<void>;
}

/** How long a start waits for Redis before serving from its own view (fail open, as later). */
const CONNECT_WAIT_MS = 2000;

/**
 * `load.store: redis`: the shared store behind its fail-open wrapper, with this sidecar's lease;
 * undefined for `memory`. A Redis not ready within CONNECT_WAIT_MS (down, a wrong password, a
 * certificate not trusted) does not stop the start: the sidecar serves from its own view, with
 * one line naming why, until Redis answers. Throws RedisFileError for a file it cannot use.
 */
export async function openLoadStore(config: Config, log: Logger): Promise<SharedLoadStore | undefined> {
  if (config.load.store !== "redis") return undefined;
  const settings = config.load.redis;
  const redis = connectRedis(settings, log);
  /** Why the connection last failed, since it was last ready: the cause behind a command's "Stream isn't writeable". */
  let connection: string | undefined;
  const failed = (error: Error): void => {
    connection = connectionCause(error) ?? connection;
  };
  redis.on("error", failed);
  redis.on("node error", failed);
  redis.on("ready", () => (connection = undefined));
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, CONNECT_WAIT_MS);
    redis.once("ready", () => {
      clearTimeout(timer);
      resolve();
    });
  });
  const shared = new RedisLoadStore(redis, { keyPrefix: settings.keyPrefix, lease: randomUUID(), sweepEveryMs: config.load.sweepSeconds * 1000 });
  const lease = new SidecarLease(redis, shared, settings.keyPrefix, settings.leaseSeconds, log);
  const store = new FailOpenStore(shared, {
    timeoutMs: settings.timeoutMs,
    coalesceMs: COALESCE_MS,
    retryMs: RETRY_MS,
    onFallback(local, reason) {
      if (local) log.warn({ reason, connection, timeoutMs: settings.timeoutMs }, "redis load store out: picking from this sidecar's own view");
      else log.info("redis load store back: picks are shared again");
    },
  });
  lease.start();
  log.info({ url: redacted(settings.url), lease: lease.id }, "load store: redis");
  // Not ready yet: one call now puts the store in fallback (the gauge, the line naming why) before
  // the first request, rather than at it.
  if (redis.status !== "ready") await store.size();
  const broadcasts: RedisBroadcast[] = [];
  return {
    store,
    get fallback() {
      return store.fallback;
    },
    broadcast(name) {
      const broadcast = new RedisBroadcast(redis, `${settings.keyPrefix}${name}`, (error) => log.debug({ err: error, channel: name }, "redis broadcast"));
      broadcasts.push(broadcast);
      return broadcast;
    },
    async close() {
      store.close();
      for (const broadcast of broadcasts) broadcast.close();
      await lease.stop();
      redis.disconnect();
    },
  };
}

/** URLs without their passwords, for the log. */
function redacted(url: string | readonly string[]): string | string[] {
  // Up to the last @ before the path: a password may hold an @ the URL parser accepts unencoded.
  const one = (u: string): string => u.replace(/\/\/[^/]*@/, "//***@");
  return typeof url === "string" ? one(url) : url.map(one);
}
