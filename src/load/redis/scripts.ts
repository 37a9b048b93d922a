// The Redis store's atomic steps, one Lua script each. Every key a script touches belongs to one
// pool and carries its hash tag, so on a Redis Cluster each pool lives in one slot and the pools
// spread over the nodes. KEYS: 1 the pool's counters (hash: r:/pr:/pt:/th:/u:<engine>),
// 2 its open reservations (hash id → JSON entry), 3 the same ids by opening time (sorted set).
// An entry: e engine, p prompt tokens, g generated, f 1 while in prefill, o opened at (ms), l lease.

const PRELUDE = `
-- Redis refuses "-0" as an integer: a negated zero must stay 0.
local function times(sign, x)
  if x == 0 then return 0 end
  return sign * x
end
local function entry(id)
  local raw = redis.call('HGET', KEYS[2], id)
  if not raw then return nil end
  return cjson.decode(raw)
end
local function save(id, e)
  redis.call('HSET', KEYS[2], id, cjson.encode(e))
end
local function shift(e, sign, now)
  redis.call('HINCRBY', KEYS[1], 'r:' .. e.e, sign)
  redis.call('HINCRBY', KEYS[1], 'th:' .. e.e, times(sign, e.p + e.g))
  if e.f == 1 then
    redis.call('HINCRBY', KEYS[1], 'pr:' .. e.e, sign)
    redis.call('HINCRBY', KEYS[1], 'pt:' .. e.e, times(sign, e.p))
  end
  redis.call('HSET', KEYS[1], 'u:' .. e.e, now)
end
local function close(id, e, now)
  shift(e, -1, now)
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
local function open(id, engine, prompt, now, lease)
  local e = { e = engine, p = prompt, g = 0, f = 1, o = now, l = lease }
  save(id, e)
  redis.call('ZADD', KEYS[3], now, id)
  shift(e, 1, now)
end
`;

/**
 * ARGV: id, now, prompt tokens, max requests, fallbacks, tie-break, the four load weights, lease,
 * then engine and bias for each candidate. Mirrors rankByLoad (ranking.ts) step for step, in the
 * same floating-point order, so both stores choose alike. Returns {'reserved', engine, fallbacks…},
 * {'saturated'} or {'duplicate'}.
 */
export const PICK = `${PRELUDE}
local id = ARGV[1]
if redis.call('HEXISTS', KEYS[2], id) == 1 then return { 'duplicate' } end
local now, prompt, limit, fallbacks, tie = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local w = { tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]) }
local lease = ARGV[11]
-- Redis keeps a hash of up to 512 fields as a listpack, where every field lookup scans the whole
-- hash: when the candidates are a good part of the pool, one read of the hash is far cheaper.
local counters = nil
if (#ARGV - 11) * 10 >= redis.call('HLEN', KEYS[1]) then
  counters = {}
  local all = redis.call('HGETALL', KEYS[1])
  for k = 1, #all, 2 do counters[all[k]] = all[k + 1] end
end
local engines, bias, loads = {}, {}, {}
for i = 12, #ARGV, 2 do
  local engine = ARGV[i]
  local v
  if counters then
    v = { counters['r:' .. engine], counters['pr:' .. engine], counters['pt:' .. engine], counters['th:' .. engine] }
  else
    v = redis.call('HMGET', KEYS[1], 'r:' .. engine, 'pr:' .. engine, 'pt:' .. engine, 'th:' .. engine)
  end
  local load = { tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0 }
  if limit == 0 or load[1] < limit then
    engines[#engines + 1] = engine
    bias[#bias + 1] = tonumber(ARGV[i + 1])
    loads[#loads + 1] = load
  end
end
if #engines == 0 then return { 'saturated' } end
local left = {}
for i = 1, #engines do left[i] = i end
local ranked = {}
while #ranked < fallbacks + 1 and #left > 0 do
  local max = { 0, 0, 0, 0 }
  for _, i in ipairs(left) do
    for d = 1, 4 do if loads[i][d] > max[d] then max[d] = loads[i][d] end end
  end
  local best, ties = math.huge, {}
  for position, i in ipairs(left) do
    local score = bias[i]
    for d = 1, 4 do
      if max[d] > 0 then score = score + (w[d] * loads[i][d]) / max[d] end
    end
    if score < best - 1e-9 then
      best, ties = score, { position }
    elseif score <= best + 1e-9 then
      ties[#ties + 1] = position
    end
  end
  local k = math.min(#ties, math.floor(tie * #ties) + 1)
  local position = ties[k]
  ranked[#ranked + 1] = engines[left[position]]
  table.remove(left, position)
end
open(id, ranked[1], prompt, now, lease)
local reply = { 'reserved' }
for _, engine in ipairs(ranked) do reply[#reply + 1] = engine end
return reply
`;

/**
 * ARGV: id, now, prompt tokens, engine, lease, then the bound: most open requests and most prompt
 * tokens in prefill once counted (-1: no bound), on the pool's own counters. {1} if opened, {0} if
 * the id was open, {-1, requests, prefill requests, prefill tokens, tokens held, updated at} if the
 * engine is at the bound.
 */
export const RESERVE = `${PRELUDE}
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return { 0 } end
local engine, prompt = ARGV[4], tonumber(ARGV[3])
local maxRequests, maxPrefill = tonumber(ARGV[6]), tonumber(ARGV[7])
if maxRequests >= 0 or maxPrefill >= 0 then
  local v = redis.call('HMGET', KEYS[1], 'r:' .. engine, 'pr:' .. engine, 'pt:' .. engine, 'th:' .. engine, 'u:' .. engine)
  for i = 1, 5 do v[i] = tonumber(v[i]) or 0 end
  if (maxRequests >= 0 and v[1] + 1 > maxRequests) or (maxPrefill >= 0 and v[3] + prompt > maxPrefill) then
    return { -1, v[1], v[2], v[3], v[4], v[5] }
  end
end
open(ARGV[1], engine, prompt, tonumber(ARGV[2]), ARGV[5])
return { 1 }
`;

/** ARGV: id, now. */
export const FIRST_TOKEN = `${PRELUDE}
local e = entry(ARGV[1])
if not e or e.f == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'pr:' .. e.e, -1)
redis.call('HINCRBY', KEYS[1], 'pt:' .. e.e, times(-1, e.p))
redis.call('HSET', KEYS[1], 'u:' .. e.e, tonumber(ARGV[2]))
e.f = 0
save(ARGV[1], e)
return 1
`;

/** ARGV: now, then id and tokens for each open reservation of the pool that generated some. Returns how many were open. */
export const ADD_GENERATED = `${PRELUDE}
local now, applied = tonumber(ARGV[1]), 0
for i = 2, #ARGV, 2 do
  local e = entry(ARGV[i])
  if e then
    local tokens = tonumber(ARGV[i + 1])
    e.g = e.g + tokens
    redis.call('HINCRBY', KEYS[1], 'th:' .. e.e, tokens)
    redis.call('HSET', KEYS[1], 'u:' .. e.e, now)
    save(ARGV[i], e)
    applied = applied + 1
  end
end
return applied
`;

/** ARGV: id, now, prompt tokens, completion tokens: the engine's own numbers replace the counted ones. */
export const RECONCILE = `${PRELUDE}
local e = entry(ARGV[1])
if not e then return 0 end
local prompt, completion = tonumber(ARGV[3]), tonumber(ARGV[4])
local promptDelta, generatedDelta = prompt - e.p, completion - e.g
if e.f == 1 then redis.call('HINCRBY', KEYS[1], 'pt:' .. e.e, promptDelta) end
redis.call('HINCRBY', KEYS[1], 'th:' .. e.e, promptDelta + generatedDelta)
redis.call('HSET', KEYS[1], 'u:' .. e.e, tonumber(ARGV[2]))
e.p, e.g = prompt, completion
save(ARGV[1], e)
return 1
`;

/** ARGV: id, now, engine. 1 if the reservation is open (and now on that engine). */
export const MOVE = `${PRELUDE}
local e = entry(ARGV[1])
if not e then return 0 end
if e.e == ARGV[3] then return 1 end
local now = tonumber(ARGV[2])
shift(e, -1, now)
e.e = ARGV[3]
shift(e, 1, now)
save(ARGV[1], e)
return 1
`;

/** ARGV: id, now. 1 if it was open. */
export const RELEASE = `${PRELUDE}
local e = entry(ARGV[1])
if not e then return 0 end
close(ARGV[1], e, tonumber(ARGV[2]))
return 1
`;

/**
 * ARGV: cutoff, now, then the leases of dead sidecars. Closes the reservations opened at or before
 * the cutoff and those of the dead leases, and forgets engines idle since the cutoff. Returns the
 * closed entries as JSON {id, engine, prompt, reaped} (reaped: a dead lease's).
 */
export const SWEEP = `${PRELUDE}
local cutoff, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local expired = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', cutoff)) do
  local e = entry(id)
  if e then
    close(id, e, now)
    expired[#expired + 1] = cjson.encode({ id = id, engine = e.e, prompt = e.p, reaped = false })
  else
    redis.call('ZREM', KEYS[3], id)
  end
end
if #ARGV > 2 then
  local dead = {}
  for i = 3, #ARGV do dead[ARGV[i]] = true end
  local all = redis.call('HGETALL', KEYS[2])
  for i = 1, #all, 2 do
    local e = cjson.decode(all[i + 1])
    if dead[e.l] then
      close(all[i], e, now)
      expired[#expired + 1] = cjson.encode({ id = all[i], engine = e.e, prompt = e.p, reaped = true })
    end
  end
end
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local name = fields[i]
  if string.sub(name, 1, 2) == 'r:' and tonumber(fields[i + 1]) == 0 then
    local engine = string.sub(name, 3)
    local updated = tonumber(redis.call('HGET', KEYS[1], 'u:' .. engine)) or 0
    if updated <= cutoff then
      redis.call('HDEL', KEYS[1], 'r:' .. engine, 'pr:' .. engine, 'pt:' .. engine, 'th:' .. engine, 'u:' .. engine)
    end
  end
end
return expired
`;
