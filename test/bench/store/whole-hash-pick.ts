import { PICK } from "../../../src/load/redis/scripts.js";

// Bench apparatus, not production: the Lua PICK with its read changed, to measure what that read costs.

const PER_CANDIDATE_READ = "  local v = redis.call('HMGET', KEYS[1], 'r:' .. engine, 'pr:' .. engine, 'pt:' .. engine, 'th:' .. engine)";
const FROM_WHOLE_HASH = "  local v = { counters['r:' .. engine], counters['pr:' .. engine], counters['pt:' .. engine], counters['th:' .. engine] }";
const CANDIDATE_LOOP = "local engines, bias, loads = {}, {}, {}";
const READ_WHOLE_HASH = `local counters, all = {}, redis.call('HGETALL', KEYS[1])
for k = 1, #all, 2 do counters[all[k]] = all[k + 1] end
`;

function replaced(script: string, from: string, to: string): string {
  if (!script.includes(from)) throw new Error(`PICK in scripts.ts changed: no longer has ${JSON.stringify(from)}`);
  return script.replace(from, to);
}

/**
 * PICK reading the pool's counters with one HGETALL instead of one HMGET per candidate. Redis keeps
 * a hash of up to 512 fields (~100 engines at 5 fields each) as a listpack, where every field lookup
 * is a scan of the whole hash: one read of the hash makes that O(pool) instead of O(candidates × pool).
 */
export const WHOLE_HASH_PICK = replaced(replaced(PICK, PER_CANDIDATE_READ, FROM_WHOLE_HASH), CANDIDATE_LOOP, READ_WHOLE_HASH + CANDIDATE_LOOP);
