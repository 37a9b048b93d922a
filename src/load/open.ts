import type { Config } from "../config/schema.js";
import type { Logger } from "../log.js";
import { FailOpenStore } from "./fail-open-store.js";
import { randomUUID } from "node:crypto";
import { connectRedis } from "./redis/connect.js";
import { SidecarLease } from "./redis/lease.js";
import { RedisLoadStore } from "./redis/redis-store.js";
import type { LoadStore } from "./store.js";

/** Generated tokens of one exchange reach Redis at most this often. */
const COALESCE_MS = 100;
/** While Redis is out, it is tried again this often. */
const RETRY_MS = 1000;

export interface SharedLoadStore {
  store: LoadStore;
  /** Gives the lease up and closes the connection; the shutdown has released what it held. */
  close(): Promise<void>;
}

/** How long a start waits for Redis before serving from its own view (fail open, as later). */
const CONNECT_WAIT_MS = 2000;

/** `load.store: redis`: the shared store behind its fail-open wrapper, with this sidecar's lease; undefined for `memory`. */
export async function openLoadStore(config: Config, log: Logger, onFallback: (local: boolean) => void): Promise<SharedLoadStore | undefined> {
  if (config.load.store !== "redis") return undefined;
  const settings = config.load.redis;
  const redis = connectRedis(settings, log);
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
      onFallback(local);
      if (local) log.warn({ reason, timeoutMs: settings.timeoutMs }, "redis load store out: picking from this sidecar's own view");
      else log.info("redis load store back: picks are shared again");
    },
  });
  lease.start();
  log.info({ url: redacted(settings.url), lease: lease.id }, "load store: redis");
  return {
    store,
    async close() {
      store.close();
      await lease.stop();
      redis.disconnect();
    },
  };
}

/** URLs without their passwords, for the log. */
function redacted(url: string | readonly string[]): string | string[] {
  const one = (u: string): string => u.replace(/\/\/([^@/]*)@/, "//***@");
  return typeof url === "string" ? one(url) : url.map(one);
}
