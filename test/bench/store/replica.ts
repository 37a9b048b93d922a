// One simulated sidecar replica of bench:store's contention section, in a process of its own
// (forked by contention.ts): it picks on the shared pool when told, and releases what it holds.
import { randomUUID } from "node:crypto";
import { pino } from "pino";
import { MemoryLoadStore } from "../../../src/load/memory-store.js";
import { connectRedis } from "../../../src/load/redis/connect.js";
import { RedisLoadStore } from "../../../src/load/redis/redis-store.js";
import type { PickRequest } from "../../../src/load/store.js";
import { PoolDirectory } from "../../../src/pools/pools.js";
import { Picker } from "../../../src/scheduling/picker.js";
import { GuardedReserve } from "./guarded-reserve.js";
import { benchConfig, KEY_PREFIX, poolName } from "./pool.js";
import { commandsSent, countCommandsSent, countsSince, totalOf } from "./redis-probe.js";

const PICK_METHODS = ["lua", "guarded", "unguarded"] as const;
export type PickMethod = (typeof PICK_METHODS)[number];
const isPickMethod = (name: string | undefined): name is PickMethod => PICK_METHODS.some((method) => method === name);

export type ToReplica = { kind: "pick"; count: number; inFlight: number } | { kind: "release" };

export type FromReplica =
  | { kind: "ready" }
  | { kind: "picked"; latencies: number[]; attempts: number; commands: number; exhausted: number; failed: number }
  | { kind: "released" };

/** Every pick asks for the same: identical requests must spread evenly. */
const PROMPT_TOKENS = 500;
/** Guarded reads and reserves per pick before it gives up. */
const MAX_ATTEMPTS = 5;
/** Redis calls bounded far above the fail-open store's 50 ms: this compares the pick mechanisms, a late answer is still measured. */
const TIMEOUT_MS = 1000;

interface Method {
  pick(request: PickRequest): Promise<{ reserved: boolean; attempts: number; exhausted: boolean }>;
  release(id: string): Promise<void>;
}

/** The store request the real scheduling chain plans for the bench's request; picks differ only by id and tie-break. */
async function plannedRequest(engines: number, url: string): Promise<PickRequest> {
  let planned: PickRequest | undefined;
  const capture = new (class extends MemoryLoadStore {
    override pickAndReserve(request: PickRequest) {
      planned = request;
      return super.pickAndReserve(request);
    }
  })();
  const config = benchConfig("redis", engines, url);
  const directory = new PoolDirectory(config.pools);
  // Every engine a candidate: this compares the pick mechanisms on the whole pool, not on one sample of it.
  await new Picker(capture, () => directory, { ...config.scheduling, maxCandidates: 0 }).pick({ id: "plan", model: "bench", promptTokens: PROMPT_TOKENS });
  if (planned === undefined) throw new Error("the scheduling chain planned no pick");
  return planned;
}

function methodOf(name: PickMethod, redis: ReturnType<typeof connectRedis>, pool: string): Method {
  const lease = randomUUID();
  if (name === "lua") {
    const store = new RedisLoadStore(redis, { keyPrefix: KEY_PREFIX, lease, sweepEveryMs: 0 });
    return {
      async pick(request) {
        return { reserved: (await store.pickAndReserve(request)).kind === "reserved", attempts: 1, exhausted: false };
      },
      async release(id) {
        await store.release(id, "ok");
      },
    };
  }
  const guarded = new GuardedReserve(redis, { keyPrefix: KEY_PREFIX, lease, guard: name === "guarded", maxAttempts: MAX_ATTEMPTS });
  return {
    async pick(request) {
      const { outcome, attempts } = await guarded.pickAndReserve(request);
      return { reserved: outcome === "reserved", attempts, exhausted: outcome === "exhausted" };
    },
    async release(id) {
      await guarded.release(pool, id);
    },
  };
}

/** `count` picks, `inFlight` at a time, timed one by one. */
async function pickRound(method: Method, planned: PickRequest, held: string[], count: number, inFlight: number): Promise<FromReplica> {
  const figures = { kind: "picked" as const, latencies: [] as number[], attempts: 0, commands: 0, exhausted: 0, failed: 0 };
  const sentBefore = commandsSent();
  let started = 0;
  const worker = async (): Promise<void> => {
    while (started < count) {
      started += 1;
      const id = `${process.pid}-${randomUUID()}`;
      const at = performance.now();
      try {
        const pick = await method.pick({ ...planned, id, tieBreak: Math.random() });
        figures.latencies.push(performance.now() - at);
        figures.attempts += pick.attempts;
        if (pick.reserved) held.push(id);
        else if (pick.exhausted) figures.exhausted += 1;
        else figures.failed += 1;
      } catch {
        figures.failed += 1;
      }
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  figures.commands = totalOf(countsSince(sentBefore));
  return figures;
}

async function main(): Promise<void> {
  const [name, url, engineCount] = process.argv.slice(2);
  if (!isPickMethod(name)) throw new Error(`unknown pick method ${String(name)}`);
  if (url === undefined) throw new Error("no Redis URL");
  const engines = Number(engineCount);
  countCommandsSent();
  const redis = connectRedis({ url, timeoutMs: TIMEOUT_MS }, pino({ level: "warn" }, pino.destination(2)));
  // The client refuses commands until it is connected (no offline queue, as in production).
  await new Promise<void>((resolve) => redis.once("ready", () => resolve()));
  const method = methodOf(name, redis, poolName(engines));
  const planned = await plannedRequest(engines, url);
  const held: string[] = [];
  const reply = (message: FromReplica): void => void process.send?.(message);
  process.on("message", (message: ToReplica) => {
    if (message.kind === "pick") void pickRound(method, planned, held, message.count, message.inFlight).then(reply);
    else void Promise.all(held.splice(0).map((id) => method.release(id))).then(() => reply({ kind: "released" }));
  });
  process.once("disconnect", () => redis.disconnect());
  reply({ kind: "ready" });
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
