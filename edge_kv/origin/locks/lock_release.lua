-- Lock release: compare-and-delete. KEYS[1] lease key, ARGV[1] owner.
-- Reply: 1 deleted, 0 not the owner (nothing changed).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
