-- Idempotency key: renew our in-flight lease (RedisStore.extend). KEYS[1] the record.
-- ARGV[1] owner token, ARGV[2] lease ms. Reply: 1 renewed, 0 not ours (nothing changed).
if redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
