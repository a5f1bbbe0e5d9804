-- Fenced write: check the fence and write the data in one step (FencedStore).
-- The accept rule mirrors edge_kv.core.lease.fencing_accepts line for line:
--   no fence yet, or a higher token: accepted, the fence becomes (token, owner);
--   the same token from the owner that presented it first: accepted;
--   anything else (a lower token, or the same token from another owner): refused,
--   nothing changes.
-- KEYS[1] the fence: "<token>" (no owner given) or "<token>|<owner>", never expires.
-- KEYS[2] the data key (absent for "observe"); same {hash tag} as KEYS[1] on a cluster.
-- ARGV[1] token, ARGV[2] owner ('' = none), ARGV[3] op (set | incrby | rpush | del |
-- observe), ARGV[4] value, ARGV[5] px for set (0 = no expiry).
-- Reply: {accepted 0/1, highest token after the call (string), its owner, op result}.
local function fencing_accepts(highest_seen, token, seen_owner, owner)
  if highest_seen == nil or token > highest_seen then
    return true
  end
  return token == highest_seen and owner == seen_owner
end

local token = tonumber(ARGV[1])
local owner = ARGV[2]
local cur = redis.call('GET', KEYS[1])
local highest, seen = nil, ''
if cur then
  local bar = string.find(cur, '|', 1, true)
  if bar then
    highest = tonumber(string.sub(cur, 1, bar - 1))
    seen = string.sub(cur, bar + 1)
  else
    highest = tonumber(cur)
  end
end
if not fencing_accepts(highest, token, seen, owner) then
  return {0, string.format('%d', highest), seen, false}
end
if highest == nil or token > highest then
  if owner == '' then
    redis.call('SET', KEYS[1], ARGV[1])
  else
    redis.call('SET', KEYS[1], ARGV[1] .. '|' .. owner)
  end
  highest, seen = token, owner
end
local op = ARGV[3]
local result = false
if op == 'set' then
  local px = tonumber(ARGV[5])
  if px > 0 then
    redis.call('SET', KEYS[2], ARGV[4], 'PX', px)
  else
    redis.call('SET', KEYS[2], ARGV[4])
  end
  result = 1
elseif op == 'incrby' then
  result = redis.call('INCRBY', KEYS[2], ARGV[4])
elseif op == 'rpush' then
  result = redis.call('RPUSH', KEYS[2], ARGV[4])
elseif op == 'del' then
  result = redis.call('DEL', KEYS[2])
end
return {1, string.format('%d', highest), seen, result}
