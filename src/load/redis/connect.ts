import { readFileSync } from "node:fs";
import { Cluster, Redis, type RedisOptions } from "ioredis";
import type { Logger } from "../../log.js";

export interface RedisSettings {
  url: string | readonly string[];
  passwordFile?: string | undefined;
  timeoutMs: number;
}

/** The password not given in the URL: from `passwordFile`, else METADATA_CENTER_REDIS_PASSWORD. */
function password(settings: RedisSettings): string | undefined {
  if (settings.passwordFile !== undefined) return readFileSync(settings.passwordFile, "utf8").trim();
  return process.env["METADATA_CENTER_REDIS_PASSWORD"] || undefined;
}

/** A URL's node address. */
function address(url: string): { host: string; port: number } {
  const parsed = new URL(url);
  return { host: parsed.hostname.replace(/^\[|\]$/g, ""), port: Number(parsed.port || 6379) };
}

/** A URL's password and TLS (rediss://) as ioredis options. */
function access(url: string): { password?: string; tls?: object } {
  const parsed = new URL(url);
  return {
    ...(parsed.password === "" ? {} : { password: decodeURIComponent(parsed.password) }),
    ...(parsed.protocol === "rediss:" ? { tls: {} } : {}),
  };
}

/**
 * A client that never makes a request wait: no queue while disconnected (a command then fails at
 * once and the sidecar picks from its own view), each command bounded by `timeoutMs`, and
 * commands of one tick sent together. It reconnects in the background.
 */
export function connectRedis(settings: RedisSettings, log: Logger): Redis | Cluster {
  const fromFile = password(settings);
  const common: RedisOptions = {
    commandTimeout: settings.timeoutMs,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: Math.max(1000, settings.timeoutMs),
    retryStrategy: (attempt) => Math.min(attempt * 100, 1000),
    ...(fromFile === undefined ? {} : { password: fromFile }),
  };
  const { url } = settings;
  // A Cluster's seeds share one password and TLS setting: the first URL's.
  const client =
    typeof url === "string"
      ? new Redis({ ...common, ...address(url), ...access(url), enableAutoPipelining: true })
      : new Cluster(url.map(address), {
          redisOptions: { ...common, ...access(url[0] ?? "") },
          enableOfflineQueue: false,
          enableAutoPipelining: true,
          clusterRetryStrategy: (attempt) => Math.min(attempt * 100, 1000),
        });
  let lastError = "";
  client.on("error", (error: Error) => {
    // One line per distinct error: a Redis that is down repeats the same one on every retry.
    if (error.message === lastError) return;
    lastError = error.message;
    log.debug({ reason: error.message }, "redis connection error");
  });
  client.on("ready", () => {
    lastError = "";
  });
  return client;
}
