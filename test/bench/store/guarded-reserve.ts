import type { Cluster, Redis } from "ioredis";
import { rankByLoad } from "../../../src/load/ranking.js";
import { snapshotsOf } from "../../../src/load/redis/redis-store.js";
import { RELEASE, RESERVE } from "../../../src/load/redis/scripts.js";
import { zeroLoad, type EngineLoad, type PickRequest } from "../../../src/load/store.js";
import { poolKeys } from "./pool.js";

// Bench apparatus, not production: the alternative to the Lua PICK that issue #10 asks to measure.

/** Where RESERVE's own steps begin, after the helpers every script shares. */
const RESERVE_STEPS = "\nif redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then";

/** RESERVE's ARGV 6 and 7: no bound. */
const NO_BOUND = [-1, -1] as const;

/** The guard's answer when another replica changed the chosen engine: RESERVE's own answers are 1, 0 and -1 (over a bound). */
const STALE = -2;

/** ARGV 8..11: the chosen engine's four counters as the pick read them; any change since is a lost race. */
const GUARD = `
local read = { counters(ARGV[4]) }
for d = 1, 4 do
  if read[d] ~= tonumber(ARGV[7 + d]) then return { ${STALE} } end
end`;

/** The production RESERVE behind the guard, so entries and counters are the Redis store's own: {1} reserved, {0} id open, {STALE} lost a race. */
function guarded(reserve: string): string {
  const at = reserve.indexOf(RESERVE_STEPS);
  if (at < 0) throw new Error("RESERVE in scripts.ts changed: the guard no longer knows where its steps begin");
  return reserve.slice(0, at) + GUARD + reserve.slice(at);
}

type ScriptCall = (...args: Array<string | number>) => Promise<unknown>;
interface Scripts {
  benchGuardedReserve: ScriptCall;
  benchReserve: ScriptCall;
  benchRelease: ScriptCall;
}

export interface GuardedPick {
  outcome: "reserved" | "saturated" | "none" | "exhausted";
  /** Reads and reserves tried: 1 when no other replica got in between. */
  attempts: number;
}

/**
 * Pick by guarded reserve: read the candidates' live counters (one HMGET), rank them here with
 * rankByLoad as the stores do, then reserve the chosen engine only if its counters are still
 * what was read, else read again (at most `maxAttempts` times). Two round trips when no other
 * replica got in between. With `guard` false it reserves whatever it read (the race left open):
 * the control that shows the spread check catches a non-atomic pick.
 */
export class GuardedReserve {
  private readonly scripts: Scripts;

  constructor(
    private readonly redis: Redis | Cluster,
    private readonly options: { keyPrefix: string; lease: string; guard: boolean; maxAttempts: number },
  ) {
    const lua = { benchGuardedReserve: guarded(RESERVE), benchReserve: RESERVE, benchRelease: RELEASE };
    for (const [name, script] of Object.entries(lua)) redis.defineCommand(name, { numberOfKeys: 3, lua: script });
    this.scripts = redis as unknown as Scripts;
  }

  private keys(pool: string): [string, string, string] {
    const keys = poolKeys(this.options.keyPrefix, pool);
    return [keys.engines, keys.reservations, keys.opened];
  }

  async pickAndReserve(request: PickRequest): Promise<GuardedPick> {
    for (let attempt = 1; attempt <= this.options.maxAttempts; attempt += 1) {
      const loads = await this.read(request);
      const chosen = this.choose(request, loads);
      if (chosen === undefined) return { outcome: "saturated", attempts: attempt };
      const reply = await this.reserve(request, chosen.engine, chosen.load);
      if (reply === 1) return { outcome: "reserved", attempts: attempt };
      if (reply !== STALE) return { outcome: "none", attempts: attempt };
    }
    return { outcome: "exhausted", attempts: this.options.maxAttempts };
  }

  /** The candidates' four counters, in one round trip. */
  private async read(request: PickRequest): Promise<EngineLoad[]> {
    const values = await this.redis.hmgetBuffer(this.keys(request.pool)[0], ...request.candidates);
    const packed = Object.fromEntries(request.candidates.flatMap((engine, index) => {
      const value = values[index];
      return value === null || value === undefined ? [] : [[engine, value]];
    }));
    const counters = snapshotsOf(packed);
    return request.candidates.map((engine) => counters.get(engine) ?? zeroLoad());
  }

  /** As the memory store chooses: engines at the limit out, the rest ranked; undefined when every one is at the limit. */
  private choose(request: PickRequest, loads: readonly EngineLoad[]): { engine: string; load: EngineLoad } | undefined {
    const eligible = request.candidates.flatMap((engine, index) => {
      const load = loads[index];
      if (load === undefined || (request.maxRequests > 0 && load.requests >= request.maxRequests)) return [];
      return [{ engine, load, bias: request.bias[index] ?? 0 }];
    });
    const [best] = rankByLoad(
      eligible.map(({ load }) => load),
      eligible.map(({ bias }) => bias),
      request.loadWeights,
      request.unitWeights,
      request.tieBreak,
      1,
    );
    return best === undefined ? undefined : eligible[best];
  }

  /** RESERVE's (or the guard's) answer: its first number. */
  private async reserve(request: PickRequest, engine: string, load: EngineLoad): Promise<number> {
    const prompt = Math.max(0, Math.floor(request.promptTokens));
    const args = [...this.keys(request.pool), request.id, Date.now(), prompt, engine, this.options.lease, ...NO_BOUND];
    const reply = this.options.guard
      ? await this.scripts.benchGuardedReserve(...args, load.requests, load.prefillRequests, load.prefillTokens, load.tokensHeld)
      : await this.scripts.benchReserve(...args);
    return Number((reply as number[])[0]);
  }

  async release(pool: string, id: string): Promise<boolean> {
    return Number(await this.scripts.benchRelease(...this.keys(pool), id, Date.now())) === 1;
  }
}
