-- Idempotency key: read (RedisStore.get). KEYS[1] the record hash.
-- Reply: {0} absent, or {1, state, fingerprint, status, headers, body, pttl}.
local rec = redis.call('HMGET', KEYS[1], 's', 'fp', 'st', 'h', 'b')
if not rec[1] then return {0} end
return {1, rec[1], rec[2] or '', rec[3] or '', rec[4] or '', rec[5] or '', redis.call('PTTL', KEYS[1])}
