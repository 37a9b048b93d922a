import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { Cluster, Redis, type RedisOptions } from "ioredis";
import type { Logger } from "../../log.js";
import { parseRedisUrl, type RedisUrl } from "../../config/redis-url.js";

export interface RedisSettings {
  url: string | readonly string[];
  passwordFile?: string | undefined;
  /** PEM CA certificates a rediss:// server's certificate must chain to, in place of Node's default roots. */
  caFile?: string | undefined;
  timeoutMs: number;
}

/** Distinct connection errors logged between two moments the client is ready. */
const MAX_REASONS_LOGGED = 20;

/** A file of `load.redis` (passwordFile, caFile) that cannot be used; the message names the field and the file. */
export class RedisFileError extends Error {
  override readonly name = "RedisFileError";
}

function read(field: "passwordFile" | "caFile", file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (error) {
    throw new RedisFileError(`load.redis.${field}: ${file} cannot be read: ${(error as Error).message}`);
  }
}

/** The password not given in the URL: from `passwordFile` (surrounding whitespace dropped), else METADATA_CENTER_REDIS_PASSWORD. */
function password(settings: RedisSettings): string | undefined {
  if (settings.passwordFile === undefined) return process.env["METADATA_CENTER_REDIS_PASSWORD"] || undefined;
  const fromFile = read("passwordFile", settings.passwordFile).trim();
  if (fromFile === "") throw new RedisFileError(`load.redis.passwordFile: ${settings.passwordFile} is empty`);
  return fromFile;
}

/** The CA file's certificates, each checked: OpenSSL would skip one that does not parse and then fail every handshake. */
function trusted(file: string): string {
  const pem = read("caFile", file);
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new RedisFileError(`load.redis.caFile: ${file} holds no PEM certificate`);
  blocks.forEach((block, index) => {
    try {
      new X509Certificate(block);
    } catch (error) {
      throw new RedisFileError(`load.redis.caFile: certificate ${index + 1} in ${file} does not parse: ${(error as Error).message}`);
    }
  });
  return pem;
}

/**
 * What a connection error says about why Redis cannot be reached, or undefined when it says
 * nothing: ioredis also reports a command refused for want of a connection (no offline queue),
 * which follows the cause. A Cluster's own error ("Failed to refresh slots cache.") carries the
 * last node's, which names it.
 */
export function connectionCause(error: Error & { lastNodeError?: Error }): string | undefined {
  if (/enableOfflineQueue/.test(error.message)) return undefined;
  return (error.lastNodeError ?? error).message;
}

/** A URL's user, password, database and TLS as ioredis options. */
function access(url: RedisUrl, ca: string | undefined): RedisOptions {
  return {
    ...(url.username === undefined ? {} : { username: url.username }),
    ...(url.password === undefined ? {} : { password: url.password }),
    ...(url.db === 0 ? {} : { db: url.db }),
    ...(url.tls ? { tls: ca === undefined ? {} : { ca } } : {}),
  };
}

/**
 * A client that never makes a request wait: no queue while disconnected (a command then fails at
 * once and the sidecar picks from its own view), each command bounded by `timeoutMs`, and
 * commands of one tick sent together. It reconnects in the background. Each distinct reason it
 * cannot connect (refused, NOAUTH, WRONGPASS, a certificate not trusted) is logged once until it
 * is ready again. Throws RedisFileError for a passwordFile or caFile it cannot use.
 */
export function connectRedis(settings: RedisSettings, log: Logger): Redis | Cluster {
  const fromFile = password(settings);
  const ca = settings.caFile === undefined ? undefined : trusted(settings.caFile);
  const common: RedisOptions = {
    commandTimeout: settings.timeoutMs,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: Math.max(1000, settings.timeoutMs),
    retryStrategy: (attempt) => Math.min(attempt * 100, 1000),
    ...(fromFile === undefined ? {} : { password: fromFile }),
  };
  const urls = (typeof settings.url === "string" ? [settings.url] : settings.url).map(parseRedisUrl);
  // A Cluster's seeds share one user, password and TLS setting (the config checks they agree): the first URL's.
  const first = urls[0]!;
  const client =
    typeof settings.url === "string"
      ? new Redis({ ...common, host: first.host, port: first.port, ...access(first, ca), enableAutoPipelining: true })
      : new Cluster(
          urls.map(({ host, port }) => ({ host, port })),
          {
            redisOptions: { ...common, ...access(first, ca) },
            enableOfflineQueue: false,
            enableAutoPipelining: true,
            clusterRetryStrategy: (attempt) => Math.min(attempt * 100, 1000),
          },
        );
  /** Reasons logged since the client was last ready: a Redis that is out repeats them on every retry, often alternating. */
  const logged = new Set<string>();
  const failed = (error: Error, node?: string): void => {
    const reason = connectionCause(error);
    if (reason === undefined || logged.has(reason) || logged.size >= MAX_REASONS_LOGGED) return;
    logged.add(reason);
    log.warn({ reason, ...(node === undefined ? {} : { node }) }, "redis connection error");
  };
  client.on("error", (error: Error) => failed(error));
  // A Cluster reports each node's errors apart; its own "error" says only that it could not refresh its slots.
  client.on("node error", (error: Error, node: string) => failed(error, node));
  client.on("ready", () => logged.clear());
  return client;
}
