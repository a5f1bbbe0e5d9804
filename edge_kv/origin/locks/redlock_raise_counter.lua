-- Redlock phase 2 on one node. KEYS[1] lease key, KEYS[2] fencing counter.
-- ARGV[1] owner, ARGV[2] token.
-- Reply: 1 if this node's counter is now >= token (raised when lower), 0 if the owner
-- no longer holds the lease here (nothing changed).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local c = tonumber(redis.call('GET', KEYS[2]) or '0')
if c < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[2])
end
return 1
