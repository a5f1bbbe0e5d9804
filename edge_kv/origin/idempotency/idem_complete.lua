-- Idempotency key: in flight -> done, owner only (RedisStore.complete). KEYS[1] the record.
-- ARGV[1] owner token, ARGV[2] status, ARGV[3] headers JSON, ARGV[4] body, ARGV[5] ttl ms.
-- Reply: 1 stored, 0 the mark is no longer ours (nothing changed).
if redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 't')
redis.call('HSET', KEYS[1], 's', 'd', 'st', ARGV[2], 'h', ARGV[3], 'b', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
