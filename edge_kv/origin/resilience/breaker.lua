-- Circuit breaker state machine, shared through one Redis hash (KEYS[1]).
-- Mirrors edge_kv/core/breaker.py line for line; keep them in step
-- (tests/origin/resilience/test_resilience_breaker_lua_mirror.py runs both on random sequences).
-- ARGV: op ('a' acquire | 'r' record | 'f' force), now_ms ('' = Redis server TIME),
--       ttl_ms, then BreakerConfig.lua_args() (9 values), then
--       record: gen, kind (0 ok, 1 failure, 2 ignored), duration_ms | force: new state.
-- Returns {allowed, gen, state, retry_after_ms, changed}.
local key = KEYS[1]
local op = ARGV[1]
local now
if ARGV[2] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[2])
end
local ttl = tonumber(ARGV[3])
local wtype = tonumber(ARGV[4])
local size = tonumber(ARGV[5])
local minimum = tonumber(ARGV[6])
local fthr = tonumber(ARGV[7])
local slow_ms = tonumber(ARGV[8])
local sthr = tonumber(ARGV[9])
local wait_ms = tonumber(ARGV[10])
local probes = tonumber(ARGV[11])
local half_ms = tonumber(ARGV[12])

local CLOSED, OPEN, HALF_OPEN = 0, 1, 2

local function I(x) return string.format('%d', x) end
local function num(x) return tonumber(x) or 0 end

local h = redis.call('HMGET', key, 'st', 'gen', 'since', 'pa', 'pc', 'pf', 'ps')
local state, gen, since = num(h[1]), num(h[2]), num(h[3])
local pa, pc, pf, ps = num(h[4]), num(h[5]), num(h[6]), num(h[7])

local function transition(new)
  gen = gen + 1
  since = now
  redis.call('DEL', key)
  redis.call('HSET', key, 'st', I(new), 'gen', I(gen), 'since', I(now))
  state = new
  pa, pc, pf, ps = 0, 0, 0, 0
end

local function tripped(calls, fails, slows)
  if calls <= 0 then return false end
  if fails * 100 >= fthr * calls then return true end
  return slow_ms > 0 and slows * 100 >= sthr * calls
end

local function done(r)
  redis.call('PEXPIRE', key, ttl)
  return r
end

if op == 'f' then
  local old = state
  local new = tonumber(ARGV[13])
  transition(new)
  local allowed = 0
  if new == CLOSED then allowed = 1 end
  return done({allowed, gen, new, 0, old})
end

if op == 'a' then
  local changed = -1
  if state == OPEN then
    if now - since < wait_ms then
      return {0, gen, OPEN, since + wait_ms - now, -1}
    end
    transition(HALF_OPEN)
    changed = OPEN
  end
  if state == HALF_OPEN then
    if pa >= probes and now - since >= half_ms then
      transition(HALF_OPEN)
    end
    if pa < probes then
      pa = pa + 1
      redis.call('HSET', key, 'pa', I(pa))
      return done({1, gen, HALF_OPEN, 0, changed})
    end
    local ra = since + half_ms - now
    if ra < 1 then ra = 1 end
    if changed >= 0 then return done({0, gen, HALF_OPEN, ra, changed}) end
    return {0, gen, HALF_OPEN, ra, changed}
  end
  return {1, gen, CLOSED, 0, -1}
end

-- op == 'r'
local rgen = tonumber(ARGV[13])
local kind = tonumber(ARGV[14])
local duration = tonumber(ARGV[15])
if rgen ~= gen then
  return {0, gen, state, 0, -1}
end
if kind == 2 then
  if state == HALF_OPEN and pa > 0 then
    redis.call('HSET', key, 'pa', I(pa - 1))
    return done({0, gen, state, 0, -1})
  end
  return {0, gen, state, 0, -1}
end
local fail = 0
if kind == 1 then fail = 1 end
local slow = 0
if slow_ms > 0 and duration >= slow_ms then slow = 1 end
if state == HALF_OPEN then
  pc = pc + 1
  pf = pf + fail
  ps = ps + slow
  redis.call('HSET', key, 'pc', I(pc), 'pf', I(pf), 'ps', I(ps))
  if pc >= probes then
    local new = CLOSED
    if tripped(pc, pf, ps) then new = OPEN end
    transition(new)
    return done({0, gen, new, 0, HALF_OPEN})
  end
  return done({0, gen, state, 0, -1})
end
if state ~= CLOSED then
  return {0, gen, state, 0, -1}
end
local calls, fails, slows
if wtype == 1 then
  local w = redis.call('HMGET', key, 'h', 'n', 'f', 's')
  local head = num(w[1])
  calls, fails, slows = num(w[2]), num(w[3]), num(w[4])
  local slot = 'r' .. I(head)
  local old = num(redis.call('HGET', key, slot))
  if old > 0 then
    calls = calls - 1
    fails = fails - (old - 1) % 2
    slows = slows - math.floor((old - 1) / 2)
  end
  calls = calls + 1
  fails = fails + fail
  slows = slows + slow
  redis.call('HSET', key, slot, I(1 + fail + 2 * slow), 'h', I((head + 1) % size),
    'n', I(calls), 'f', I(fails), 's', I(slows))
else
  local sec = math.floor(now / 1000)
  local i = sec % size
  local names = {}
  for j = 0, size - 1 do
    local s = I(j)
    names[#names + 1] = 'be' .. s
    names[#names + 1] = 'bc' .. s
    names[#names + 1] = 'bf' .. s
    names[#names + 1] = 'bs' .. s
  end
  local b = redis.call('HMGET', key, unpack(names))
  local base = 4 * i
  if num(b[base + 1]) ~= sec then
    b[base + 1], b[base + 2], b[base + 3], b[base + 4] = sec, 0, 0, 0
  end
  b[base + 2] = num(b[base + 2]) + 1
  b[base + 3] = num(b[base + 3]) + fail
  b[base + 4] = num(b[base + 4]) + slow
  local si = I(i)
  redis.call('HSET', key, 'be' .. si, I(sec), 'bc' .. si, I(b[base + 2]),
    'bf' .. si, I(b[base + 3]), 'bs' .. si, I(b[base + 4]))
  calls, fails, slows = 0, 0, 0
  for j = 0, size - 1 do
    local be = num(b[4 * j + 1])
    if be > sec - size and be <= sec then
      calls = calls + num(b[4 * j + 2])
      fails = fails + num(b[4 * j + 3])
      slows = slows + num(b[4 * j + 4])
    end
  end
end
if calls >= minimum and tripped(calls, fails, slows) then
  transition(OPEN)
  return done({0, gen, OPEN, 0, CLOSED})
end
return done({0, gen, CLOSED, 0, -1})
