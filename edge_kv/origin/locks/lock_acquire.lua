-- Lock acquire (RedisLock, and each Redlock node): lease and fencing token in one step.
-- KEYS[1] lease key (holds the owner), KEYS[2] the resource's fencing counter (never
-- expires: it must only grow); both carry the same {hash tag}.
-- ARGV[1] owner, ARGV[2] ttl ms.
-- Reply: the fencing token (an integer) on grant; {0, holder pttl, counter} otherwise.
-- The grant, the hot path, is a bare integer: redis-py parses one integer far faster
-- than a three-element array.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return {0, redis.call('PTTL', KEYS[1]), tonumber(redis.call('GET', KEYS[2]) or '0')}
