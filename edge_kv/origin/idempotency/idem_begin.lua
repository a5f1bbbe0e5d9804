-- Idempotency key: claim (RedisStore.begin). KEYS[1] the record hash.
-- ARGV[1] fingerprint, ARGV[2] owner token, ARGV[3] lease ms.
-- Reply: {1} claimed (an in-flight mark now exists), or
--        {0, state, fingerprint, status, headers, body, pttl} of the record already there.
local rec = redis.call('HMGET', KEYS[1], 's', 'fp', 'st', 'h', 'b')
if rec[1] then
  return {0, rec[1], rec[2] or '', rec[3] or '', rec[4] or '', rec[5] or '', redis.call('PTTL', KEYS[1])}
end
redis.call('HSET', KEYS[1], 's', 'p', 'fp', ARGV[1], 't', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1}
