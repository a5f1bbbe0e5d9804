-- Idempotency key: write a done record unconditionally (LayeredStore's cache fill).
-- KEYS[1] the record. ARGV[1] fingerprint, ARGV[2] status, ARGV[3] headers JSON,
-- ARGV[4] body, ARGV[5] ttl ms. Reply: 1.
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 's', 'd', 'fp', ARGV[1], 'st', ARGV[2], 'h', ARGV[3], 'b', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
