-- Lock extend: compare-and-pexpire. KEYS[1] lease key, ARGV[1] owner, ARGV[2] ttl ms.
-- Reply: 1 extended, 0 not the owner (nothing changed).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
