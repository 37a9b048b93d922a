/** What a Redis URL names: the node, who to log in as, the database, and whether to speak TLS. */
export interface RedisUrl {
  host: string;
  port: number;
  /** Percent-decoded; absent when the URL names none (the `default` user). */
  username?: string;
  /** Percent-decoded; absent when the URL holds none. */
  password?: string;
  /** The database the path names (`/2`); 0 when none. */
  db: number;
  /** rediss:// */
  tls: boolean;
}

/** A URL that cannot be read as a Redis URL. The message never repeats the URL: it may hold a password. */
export class RedisUrlError extends Error {
  override readonly name = "RedisUrlError";
}

function decoded(part: string, what: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new RedisUrlError(`its ${what} is not percent-encoded correctly (write % as %25)`);
  }
}

/**
 * Reads `redis[s]://[[user]:password@]host[:port][/db]` as redis-cli and ioredis read it: user and
 * password percent-decoded (a password holding `@ : / ? # %` must have them percent-encoded),
 * port 6379 when absent. Query options and fragments are refused rather than ignored.
 */
export function parseRedisUrl(url: string): RedisUrl {
  if (!/^rediss?:\/\//.test(url)) throw new RedisUrlError("is not a redis:// or rediss:// URL");
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new RedisUrlError("is not a URL (characters such as @ : / ? # % in a password must be percent-encoded)");
  }
  const host = parsed.hostname.replace(/^\[|\]$/g, "");
  if (host === "") throw new RedisUrlError("names no host");
  if (parsed.search !== "" || parsed.hash !== "") {
    throw new RedisUrlError("has a query or fragment, which is not read (characters such as ? and # in a password must be percent-encoded)");
  }
  const path = /^\/?(\d*)$/.exec(parsed.pathname);
  if (path === null) throw new RedisUrlError("has a path that is not a database number (/0, /1, …)");
  return {
    host,
    port: Number(parsed.port || 6379),
    ...(parsed.username === "" ? {} : { username: decoded(parsed.username, "user name") }),
    ...(parsed.password === "" ? {} : { password: decoded(parsed.password, "password") }),
    db: Number(path[1] || 0),
    tls: parsed.protocol === "rediss:",
  };
}
