// The Redis store's atomic steps, one Lua script each. Every key a script touches belongs to one
// pool and carries its hash tag, so on a Redis Cluster each pool lives in one slot and the pools
// spread over the nodes. KEYS: 1 the pool's engines (hash engine → its counters), 2 its open
// reservations (hash id → entry), 3 the same ids by opening time (sorted set).
// Values are packed with Redis's struct library, not JSON or a field per number: Lua's strings and
// redis.call are what a script spends its time on, so each step reads and writes one field per
// engine and per reservation. Counters, little-endian doubles (exact integers below 2^53):
// requests, prefill requests, prefill tokens, tokens held, updated at (ms). An entry: prompt
// tokens, generated, 1 while in prefill, opened at (ms), then the engine and the lease as strings.

/** struct formats of an engine's counters and of an entry; the store decodes the counters alike. */
export const COUNTERS_FORMAT = "<ddddd";
const ENTRY_FORMAT = "<ddddss";

const PRELUDE = `
local function counters(engine)
  local raw = redis.call('HGET', KEYS[1], engine)
  if not raw then return 0, 0, 0, 0, 0 end
  local r, pr, pt, th, u = struct.unpack('${COUNTERS_FORMAT}', raw)
  return r, pr, pt, th, u
end
local function store(engine, r, pr, pt, th, now)
  redis.call('HSET', KEYS[1], engine, struct.pack('${COUNTERS_FORMAT}', r, pr, pt, th, now))
end
local function add(engine, dr, dpr, dpt, dth, now)
  local r, pr, pt, th = counters(engine)
  store(engine, r + dr, pr + dpr, pt + dpt, th + dth, now)
end
local function entry(id)
  local raw = redis.call('HGET', KEYS[2], id)
  if not raw then return nil end
  local p, g, f, o, e, l = struct.unpack('${ENTRY_FORMAT}', raw)
  return { p = p, g = g, f = f, o = o, e = e, l = l }
end
local function save(id, e)
  redis.call('HSET', KEYS[2], id, struct.pack('${ENTRY_FORMAT}', e.p, e.g, e.f, e.o, e.e, e.l))
end
local function shift(e, sign, now)
  if e.f == 1 then
    add(e.e, sign, sign, sign * e.p, sign * (e.p + e.g), now)
  else
    add(e.e, sign, 0, 0, sign * (e.p + e.g), now)
  end
end
local function close(id, e, now)
  shift(e, -1, now)
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
local function open(id, engine, prompt, now, lease)
  save(id, { p = prompt, g = 0, f = 1, o = now, e = engine, l = lease })
  redis.call('ZADD', KEYS[3], now, id)
end
`;

/**
 * ARGV: id, now, prompt tokens, max requests, max requests in prefill, fallbacks, tie-break, the four
 * load weights, the four unit weights, lease, the number of candidates n, 1 if biases follow (else every bias is 0), the n
 * engines, then their n biases. Mirrors rankByLoad (ranking.ts) step for step, in the same
 * floating-point order, so both stores choose alike. Returns {'reserved', the chosen engine's four
 * counters before the reservation, engine, fallbacks…}, {'saturated'} or {'duplicate'}.
 */
export const PICK = `${PRELUDE}
local id = ARGV[1]
if redis.call('HEXISTS', KEYS[2], id) == 1 then return { 'duplicate' } end
local now, prompt, limit, prefillLimit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local fallbacks, tie = tonumber(ARGV[6]), tonumber(ARGV[7])
local w1, w2, w3, w4 = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local u1, u2, u3, u4 = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])
local lease, n, biased = ARGV[16], tonumber(ARGV[17]), ARGV[18] == '1'
local first = 19
-- Redis keeps a hash of up to 512 fields as a listpack, where each field lookup scans the whole
-- hash: when the candidates are a good part of the pool, one read of the whole hash is cheaper.
local raw
if n * 4 >= redis.call('HLEN', KEYS[1]) then
  local all, packed = redis.call('HGETALL', KEYS[1]), {}
  for k = 1, #all, 2 do packed[all[k]] = all[k + 1] end
  raw = {}
  for i = 1, n do raw[i] = packed[ARGV[first + i - 1]] end
else
  raw = redis.call('HMGET', KEYS[1], unpack(ARGV, first, first + n - 1))
end
-- Flat arrays and unrolled dimensions: a table per engine or per dimension costs more than the ranking.
local engines, bias, R, PR, PT, TH, m = {}, {}, {}, {}, {}, {}, 0
for i = 1, n do
  local r, pr, pt, th = 0, 0, 0, 0
  if raw[i] then r, pr, pt, th = struct.unpack('${COUNTERS_FORMAT}', raw[i]) end
  if (limit == 0 or r < limit) and (prefillLimit == 0 or pr < prefillLimit) then
    m = m + 1
    engines[m], R[m], PR[m], PT[m], TH[m] = ARGV[first + i - 1], r, pr, pt, th
    bias[m] = biased and tonumber(ARGV[first + n + i - 1]) or 0
  end
end
if m == 0 then return { 'saturated' } end
local taken, ranked, ties = {}, {}, {}
while #ranked < fallbacks + 1 and #ranked < m do
  local m1, m2, m3, m4 = 0, 0, 0, 0
  for i = 1, m do
    if not taken[i] then
      if R[i] > m1 then m1 = R[i] end
      if PR[i] > m2 then m2 = PR[i] end
      if PT[i] > m3 then m3 = PT[i] end
      if TH[i] > m4 then m4 = TH[i] end
    end
  end
  local best, tied = math.huge, 0
  for i = 1, m do
    if not taken[i] then
      local score = bias[i]
      if m1 > 0 then score = score + (w1 * R[i]) / m1 end
      if m2 > 0 then score = score + (w2 * PR[i]) / m2 end
      if m3 > 0 then score = score + (w3 * PT[i]) / m3 end
      if m4 > 0 then score = score + (w4 * TH[i]) / m4 end
      score = score + u1 * R[i] + u2 * PR[i] + u3 * PT[i] + u4 * TH[i]
      if score < best - 1e-9 then
        best, tied = score, 1
        ties[1] = i
      elseif score <= best + 1e-9 then
        tied = tied + 1
        ties[tied] = i
      end
    end
  end
  local chosen = ties[math.min(tied, math.floor(tie * tied) + 1)]
  taken[chosen] = true
  ranked[#ranked + 1] = chosen
end
local c = ranked[1]
open(id, engines[c], prompt, now, lease)
store(engines[c], R[c] + 1, PR[c] + 1, PT[c] + prompt, TH[c] + prompt, now)
local reply = { 'reserved', R[c], PR[c], PT[c], TH[c] }
for _, i in ipairs(ranked) do reply[#reply + 1] = engines[i] end
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
local engine, prompt, now = ARGV[4], tonumber(ARGV[3]), tonumber(ARGV[2])
local maxRequests, maxPrefill = tonumber(ARGV[6]), tonumber(ARGV[7])
local r, pr, pt, th, u = counters(engine)
if (maxRequests >= 0 and r + 1 > maxRequests) or (maxPrefill >= 0 and pt + prompt > maxPrefill) then
  return { -1, r, pr, pt, th, u }
end
open(ARGV[1], engine, prompt, now, ARGV[5])
store(engine, r + 1, pr + 1, pt + prompt, th + prompt, now)
return { 1 }
`;

/** ARGV: id, now. */
export const FIRST_TOKEN = `${PRELUDE}
local e = entry(ARGV[1])
if not e or e.f == 0 then return 0 end
add(e.e, 0, -1, -e.p, 0, tonumber(ARGV[2]))
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
    add(e.e, 0, 0, 0, tokens, now)
    e.g = e.g + tokens
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
add(e.e, 0, 0, e.f == 1 and promptDelta or 0, promptDelta + generatedDelta, tonumber(ARGV[2]))
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
    local p, g, f, o, engine, l = struct.unpack('${ENTRY_FORMAT}', all[i + 1])
    if dead[l] then
      close(all[i], { p = p, g = g, f = f, o = o, e = engine, l = l }, now)
      expired[#expired + 1] = cjson.encode({ id = all[i], engine = engine, prompt = p, reaped = true })
    end
  end
end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local r, pr, pt, th, u = struct.unpack('${COUNTERS_FORMAT}', all[i + 1])
  if r == 0 and u <= cutoff then redis.call('HDEL', KEYS[1], all[i]) end
end
return expired
`;
