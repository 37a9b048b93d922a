import { createHash } from "node:crypto";
import { Redis } from "ioredis";
import { ADD_GENERATED, FIRST_TOKEN, PICK, RECONCILE, RELEASE, RESERVE } from "../../../src/load/redis/scripts.js";

/** Commands this process's Redis clients sent, by what they do; the bench's own probes are left out. */
const sent = new Map<string, number>();
const uncounted = new WeakSet<Redis>();

const sha1 = (text: string): string => createHash("sha1").update(text).digest("hex");

/** The store's scripts by the SHA1 that EVALSHA names them by. */
const scriptNames = new Map(
  Object.entries({ pick: PICK, firstToken: FIRST_TOKEN, generated: ADD_GENERATED, reconcile: RECONCILE, release: RELEASE, reserve: RESERVE }).map(([name, lua]) => [sha1(lua), name]),
);

function labelOf(name: string, args: readonly unknown[]): string {
  if (name !== "evalsha") return name;
  return scriptNames.get(String(args[0])) ?? "evalsha";
}

/**
 * Counts every command a Redis client of this process sends. The stores build their clients
 * themselves (as production does), so the count is taken where every command goes through,
 * pipelined ones included: the client's sendCommand.
 */
export function countCommandsSent(): void {
  const send = Redis.prototype.sendCommand;
  Redis.prototype.sendCommand = function (this: Redis, ...args: Parameters<Redis["sendCommand"]>) {
    const [command] = args;
    if (!uncounted.has(this)) {
      const label = labelOf(command.name, command.args);
      sent.set(label, (sent.get(label) ?? 0) + 1);
    }
    return send.apply(this, args);
  };
}

/** Commands sent so far, by label. */
export const commandsSent = (): Map<string, number> => new Map(sent);

export const totalOf = (counts: ReadonlyMap<string, number>): number => [...counts.values()].reduce((sum, value) => sum + value, 0);

/** `after` − `before`, label by label. */
export function countsSince(before: ReadonlyMap<string, number>, after: ReadonlyMap<string, number> = commandsSent()): Map<string, number> {
  const since = new Map<string, number>();
  for (const [label, value] of after) {
    const delta = value - (before.get(label) ?? 0);
    if (delta !== 0) since.set(label, delta);
  }
  return since;
}

/** What Redis itself reports: commands executed (those run inside scripts too) and its CPU time. */
export interface ServerCounters {
  /** Every command but the probe's own INFO calls. */
  executed: number;
  cpuUs: number;
}

/** A connection of the bench's own, reading the server's counters; its commands are not counted as the stores'. */
export class RedisProbe {
  readonly admin: Redis;

  constructor(readonly url: string) {
    this.admin = new Redis(url);
    uncounted.add(this.admin);
  }

  async read(): Promise<ServerCounters> {
    const text = String(await this.admin.call("INFO", "commandstats", "cpu"));
    let executed = 0;
    for (const [, command, calls] of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
      if (command !== "info") executed += Number(calls);
    }
    const seconds = (name: string): number => Number(new RegExp(`^${name}:([\\d.]+)`, "m").exec(text)?.[1] ?? 0);
    return { executed, cpuUs: (seconds("used_cpu_user") + seconds("used_cpu_sys")) * 1e6 };
  }

  /** The difference since `before`. */
  async since(before: ServerCounters): Promise<ServerCounters> {
    const now = await this.read();
    return { executed: now.executed - before.executed, cpuUs: now.cpuUs - before.cpuUs };
  }

  /** One PING after another: what a round trip to this Redis costs on this machine, before any script runs. */
  async pingTimes(count: number): Promise<number[]> {
    const times: number[] = [];
    for (let i = 0; i < count; i += 1) {
      const started = performance.now();
      await this.admin.ping();
      times.push(performance.now() - started);
    }
    return times;
  }

  async version(): Promise<string> {
    return /^redis_version:(\S+)/m.exec(String(await this.admin.call("INFO", "server")))?.[1] ?? "?";
  }

  async empty(): Promise<void> {
    await this.admin.flushall();
  }

  close(): void {
    this.admin.disconnect();
  }
}
