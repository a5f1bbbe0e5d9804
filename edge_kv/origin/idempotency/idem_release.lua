-- Idempotency key: drop our in-flight mark (RedisStore.release). KEYS[1] the record.
-- ARGV[1] owner token. Reply: 1 deleted, 0 not ours (nothing changed).
if redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
