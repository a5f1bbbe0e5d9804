-- edge_kv rate limiter: every tier of one key decided atomically in one call.
-- Mirrors edge_kv/core/ratelimit.py line for line (see that file for why the
-- arithmetic is what it is); tests/origin/ratelimit proves the two agree.
--
-- KEYS[i]   state key of tier i (all keys of one call share a hash tag)
-- ARGV[1]   now in microseconds, or "" to read the server clock with TIME.
--           Production passes ""; an explicit time is a test/replay hook and
--           then no expiry is set (keys would expire on the real clock).
-- ARGV[2]   cost (integer >= 0; 0 peeks)
-- ARGV[3]   the tiers, one per key, as "kind:limit:period" joined by ",":
--   "tb"  token bucket (GCRA): limit = capacity, period = interval_us per token
--   "log" sliding log:         limit, period = window_us
--   "swc" sliding counter:     limit, period = window_ms
--   "fw"  fixed window:        limit, period = window_us
-- Reply: one string of comma-separated integers: now_us, then per tier
--        allowed (1|0), limit, remaining, retry_after_us, reset_after_us.
--        (A flat string, not an array: redis-py parses one bulk string much
--        faster than a multi-bulk of integers, ~25% of a decision's client cost.)
-- All-or-nothing: state is written only when every tier admits.
--
-- Exactness: Lua numbers are doubles; every value here is an integer < 2^53,
-- so they are exact. Numbers sent back to Redis are formatted with %d: the
-- default number-to-string conversion (%.14g) would round a TAT in
-- microseconds (~1.7e15). Floor division is math.floor plus a one-step fix.

local function fmt(n)
  return string.format('%d', n)
end

local function floor_div(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

local function ceil_div(a, b)
  return -floor_div(-a, b)
end

local function num(v)
  -- Missing keys/fields come back as false.
  if v then
    return tonumber(v)
  end
  return 0
end

local function member_ts(m)
  return tonumber(string.match(m, '^(%-?%d+)'))
end

-- Token bucket (GCRA). State: TAT in us.
local function tb_read(key, cap, t, now, cost)
  local stored = num(redis.call('GET', key))
  local burst = cap * t
  local tat = now
  if stored > now then
    tat = stored
  end
  local new_tat = tat + cost * t
  if new_tat - now > burst then
    return {0, cap, floor_div(burst - (tat - now), t), new_tat - now - burst, tat - now}, nil
  end
  return {1, cap, floor_div(burst - (new_tat - now), t), 0, new_tat - now}, new_tat
end

local function tb_write(key, new_tat, now, explicit)
  if explicit then
    redis.call('SET', key, fmt(new_tat))
  elseif new_tat > now then
    redis.call('SET', key, fmt(new_tat), 'PX', fmt(ceil_div(new_tat - now, 1000)))
  else
    redis.call('DEL', key)
  end
end

-- Sliding log. State: sorted set, score = admission time in us, one member per unit.
local function log_read(key, limit, w, now, cost)
  local count = redis.call('ZCOUNT', key, '(' .. fmt(now - w), '+inf')
  local top = nil
  if count > 0 then
    top = member_ts(redis.call('ZRANGE', key, -1, -1)[1])
  end
  if count + cost <= limit then
    local last = top
    if cost > 0 and (last == nil or now > last) then
      last = now
    end
    local reset = 0
    if last ~= nil then
      reset = last + w - now
    end
    return {1, limit, limit - count - cost, 0, reset}, count
  end
  local k = count + cost - limit
  local kth = redis.call('ZRANGEBYSCORE', key, '(' .. fmt(now - w), '+inf', 'LIMIT', k - 1, 1)[1]
  return {0, limit, limit - count, member_ts(kth) + w - now, top + w - now}, nil
end

local function log_write(key, w, now, cost, count, explicit)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now - w))
  local snow = fmt(now)
  local n = count
  for _ = 1, cost do
    -- Members must be unique: time plus a sequence number, bumped on collision.
    repeat
      n = n + 1
    until redis.call('ZADD', key, 'NX', snow, snow .. ':' .. fmt(n)) == 1
  end
  if not explicit then
    local top = redis.call('ZRANGE', key, -1, -1)[1]
    if top then
      redis.call('PEXPIRE', key, fmt(ceil_div(member_ts(top) + w - now, 1000)))
    end
  end
end

-- Sliding window counter. State: hash {w = window index, p = previous, c = current}; ms.
local function swc_reset(w, idx, prev, curr, now)
  if curr > 0 then
    return (idx + 2) * w - now
  end
  if prev > 0 then
    return (idx + 1) * w - now
  end
  return 0
end

local function swc_read(key, limit, w, now_us, cost)
  local now = floor_div(now_us, 1000)
  local idx = floor_div(now, w)
  local elapsed = now - idx * w
  local st = redis.call('HMGET', key, 'w', 'p', 'c')
  local sw, sp, sc = num(st[1]), num(st[2]), num(st[3])
  local prev, curr = 0, 0
  if sw == idx then
    prev, curr = sp, sc
  elseif sw == idx - 1 then
    prev, curr = sc, 0
  end
  local weighted = prev * (w - elapsed) + curr * w
  if weighted + cost * w <= limit * w then
    curr = curr + cost
    return {1, limit, floor_div(limit * w - weighted - cost * w, w), 0,
            swc_reset(w, idx, prev, curr, now) * 1000}, {idx, prev, curr, now}
  end
  local room = limit - curr - cost
  local at
  if room >= 0 and prev > 0 then
    at = idx * w + w - floor_div(room * w, prev)
  else
    local extra = 0
    if curr > 0 then
      extra = w - floor_div((limit - cost) * w, curr)
    end
    at = (idx + 1) * w + extra
  end
  local remaining = floor_div(limit * w - weighted, w)
  if remaining < 0 then
    remaining = 0
  end
  return {0, limit, remaining, (at - now) * 1000, swc_reset(w, idx, prev, curr, now) * 1000}, nil
end

local function swc_write(key, w, st, explicit)
  local idx, prev, curr, now = st[1], st[2], st[3], st[4]
  if explicit then
    redis.call('HSET', key, 'w', fmt(idx), 'p', fmt(prev), 'c', fmt(curr))
    return
  end
  local ttl = swc_reset(w, idx, prev, curr, now)
  if ttl > 0 then
    redis.call('HSET', key, 'w', fmt(idx), 'p', fmt(prev), 'c', fmt(curr))
    redis.call('PEXPIRE', key, fmt(ttl))
  else
    redis.call('DEL', key)
  end
end

-- Fixed window. State: hash {w = window index, c = count}; us.
local function fw_read(key, limit, w, now, cost)
  local idx = floor_div(now, w)
  local st = redis.call('HMGET', key, 'w', 'c')
  local count = 0
  if num(st[1]) == idx then
    count = num(st[2])
  end
  local ends = (idx + 1) * w - now
  if count + cost <= limit then
    count = count + cost
    local reset = 0
    if count > 0 then
      reset = ends
    end
    return {1, limit, limit - count, 0, reset}, {idx, count, ends}
  end
  return {0, limit, limit - count, ends, ends}, nil
end

local function fw_write(key, st, explicit)
  local idx, count, ends = st[1], st[2], st[3]
  if explicit then
    redis.call('HSET', key, 'w', fmt(idx), 'c', fmt(count))
  elseif count > 0 then
    redis.call('HSET', key, 'w', fmt(idx), 'c', fmt(count))
    redis.call('PEXPIRE', key, fmt(ceil_div(ends, 1000)))
  else
    redis.call('DEL', key)
  end
end

-- Main: decide every tier, then write only if all admit.
-- (The tiers travel as one argument, not three per tier: redis-py's cost to encode a
-- command grows with its argument count, and this is the hot path.)
local n = #KEYS
if n == 0 or #ARGV ~= 3 then
  return redis.error_reply('ERR edge_kv limit: expected 3 arguments and at least one key')
end
local specs = {}
for kind, limit, period in string.gmatch(ARGV[3], '([^:,]*):(%d+):(%d+)') do
  specs[#specs + 1] = {kind, tonumber(limit), tonumber(period)}
end
if #specs ~= n then
  return redis.error_reply('ERR edge_kv limit: expected one "kind:limit:period" tier per key')
end
local explicit = ARGV[1] ~= ''
local now
if explicit then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local cost = tonumber(ARGV[2])
local out = {fmt(now)}
local kinds, periods, pending = {}, {}, {}
local all = true
for i = 1, n do
  local kind, limit, period = specs[i][1], specs[i][2], specs[i][3]
  local d, st
  if kind == 'tb' then
    d, st = tb_read(KEYS[i], limit, period, now, cost)
  elseif kind == 'log' then
    d, st = log_read(KEYS[i], limit, period, now, cost)
  elseif kind == 'swc' then
    d, st = swc_read(KEYS[i], limit, period, now, cost)
  elseif kind == 'fw' then
    d, st = fw_read(KEYS[i], limit, period, now, cost)
  else
    return redis.error_reply('ERR edge_kv limit: unknown kind ' .. tostring(kind))
  end
  if d[1] == 0 then
    all = false
  end
  kinds[i], periods[i], pending[i] = kind, period, st
  for j = 1, 5 do
    out[#out + 1] = fmt(d[j])
  end
end
if all then
  for i = 1, n do
    local kind, key, st = kinds[i], KEYS[i], pending[i]
    if kind == 'tb' then
      tb_write(key, st, now, explicit)
    elseif kind == 'log' then
      log_write(key, periods[i], now, cost, st, explicit)
    elseif kind == 'swc' then
      swc_write(key, periods[i], st, explicit)
    else
      fw_write(key, st, explicit)
    end
  end
end
return table.concat(out, ',')
