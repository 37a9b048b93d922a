import { fork, type ChildProcess } from "node:child_process";
import { snapshotsOf } from "../../../src/load/redis/redis-store.js";
import type { EngineSnapshot } from "../../../src/load/store.js";
import { engineAddresses, KEY_PREFIX, poolKeys, poolName } from "./pool.js";
import type { RedisProbe } from "./redis-probe.js";
import type { FromReplica, PickMethod, ToReplica } from "./replica.js";

/** A replica process; one question at a time. */
class Replica {
  private constructor(private readonly child: ChildProcess) {}

  static async start(method: PickMethod, url: string, engines: number): Promise<Replica> {
    // Inherits this process's tsx loader (execArgv).
    const child = fork(new URL("./replica.ts", import.meta.url).pathname, [method, url, String(engines)]);
    const replica = new Replica(child);
    await replica.next();
    return replica;
  }

  private next(): Promise<FromReplica> {
    return new Promise((resolve, reject) => {
      const exited = (code: number | null): void => reject(new Error(`replica exited with ${code}`));
      this.child.once("exit", exited);
      this.child.once("message", (message: FromReplica) => {
        this.child.off("exit", exited);
        resolve(message);
      });
    });
  }

  ask(message: ToReplica): Promise<FromReplica> {
    const answer = this.next();
    this.child.send(message);
    return answer;
  }

  stop(): void {
    this.child.disconnect();
  }
}

export interface ContentionSettings {
  replicas: number;
  /** Picks each replica makes per round, then all are counted and released. */
  roundPicks: number;
  seconds: number;
}

export interface ContentionFigures {
  method: PickMethod;
  engines: number;
  /** Picks each replica had under way at a time. */
  inFlight: number;
  picks: number;
  latencies: number[];
  /** Commands each replica sent per pick: each one a round trip the pick waited for. */
  commandsPerPick: number;
  /** Reads and reserves tried again because another replica changed the chosen engine in between, per pick. */
  retriesPerPick: number;
  exhausted: number;
  failed: number;
  redisCpuUsPerPick: number;
  rounds: number;
  /** The largest max − min of open requests per engine seen after a round. */
  worstSpread: number;
  roundsOverOne: number;
  /** Counters and ledger left once every round was released: 0 when nothing leaked. */
  drift: number;
}

/** max − min of open requests over every engine of the pool (an engine never picked counts 0). */
/** The pool's engines' counters as Redis holds them. */
async function countersOf(probe: RedisProbe, engines: number): Promise<Map<string, EngineSnapshot>> {
  return snapshotsOf(await probe.admin.hgetallBuffer(poolKeys(KEY_PREFIX, poolName(engines)).engines));
}

/** max − min of open requests over every engine of the pool (an engine never picked counts 0). */
async function spreadOf(probe: RedisProbe, engines: number): Promise<number> {
  const counters = await countersOf(probe, engines);
  const open = engineAddresses(engines).map((engine) => counters.get(engine)?.requests ?? 0);
  return Math.max(...open) - Math.min(...open);
}

async function driftOf(probe: RedisProbe, engines: number): Promise<number> {
  const held = [...(await countersOf(probe, engines)).values()].flatMap(({ requests, prefillRequests, prefillTokens, tokensHeld }) => [requests, prefillRequests, prefillTokens, tokensHeld]);
  return held.reduce((sum, value) => sum + Math.abs(value), 0) + (await probe.admin.hlen(poolKeys(KEY_PREFIX, poolName(engines)).reservations));
}

/** Replicas picking on one pool at once, round after round, with one pick method. */
export async function runContention(
  method: PickMethod,
  engines: number,
  inFlight: number,
  probe: RedisProbe,
  settings: ContentionSettings,
): Promise<ContentionFigures> {
  const replicas = await Promise.all(Array.from({ length: settings.replicas }, () => Replica.start(method, probe.url, engines)));
  const figures: ContentionFigures = {
    method,
    engines,
    inFlight,
    picks: 0,
    latencies: [],
    commandsPerPick: 0,
    retriesPerPick: 0,
    exhausted: 0,
    failed: 0,
    redisCpuUsPerPick: 0,
    rounds: 0,
    worstSpread: 0,
    roundsOverOne: 0,
    drift: 0,
  };
  let commands = 0;
  let attempts = 0;
  let redisCpuUs = 0;
  try {
    const until = performance.now() + settings.seconds * 1000;
    while (performance.now() < until) {
      const before = await probe.read();
      const answers = await Promise.all(replicas.map((replica) => replica.ask({ kind: "pick", count: settings.roundPicks, inFlight })));
      redisCpuUs += (await probe.since(before)).cpuUs;
      for (const answer of answers) {
        if (answer.kind !== "picked") throw new Error(`replica answered ${answer.kind} to pick`);
        figures.picks += answer.latencies.length;
        figures.latencies.push(...answer.latencies);
        figures.exhausted += answer.exhausted;
        figures.failed += answer.failed;
        commands += answer.commands;
        attempts += answer.attempts;
      }
      const spread = await spreadOf(probe, engines);
      figures.worstSpread = Math.max(figures.worstSpread, spread);
      if (spread > 1) figures.roundsOverOne += 1;
      figures.rounds += 1;
      await Promise.all(replicas.map((replica) => replica.ask({ kind: "release" })));
    }
    figures.drift = await driftOf(probe, engines);
  } finally {
    for (const replica of replicas) replica.stop();
    await probe.empty();
  }
  const perPick = (value: number): number => value / Math.max(1, figures.picks);
  return { ...figures, commandsPerPick: perPick(commands), retriesPerPick: perPick(attempts - figures.picks), redisCpuUsPerPick: perPick(redisCpuUs) };
}
