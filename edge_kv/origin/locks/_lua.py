"""The lock scripts, shared by :class:`RedisLock` (one node) and :class:`Redlock` (each node).

Keys: ``KEYS[1]`` the lease key holding the owner token, ``KEYS[2]`` the resource's
fencing counter (never expires: it must only grow). Both carry the same ``{hash tag}``.
"""

from __future__ import annotations

from edge_kv.origin._scripts import LuaScript

# ARGV[1] owner, ARGV[2] ttl ms -> the fencing token (an integer reply) on grant,
# {0, pttl of the holder, current counter} otherwise. The grant, the hot path, is a bare
# integer because redis-py parses one integer far faster than a three-element array.
ACQUIRE = LuaScript(
    """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return {0, redis.call('PTTL', KEYS[1]), tonumber(redis.call('GET', KEYS[2]) or '0')}
""",
    name="lock_acquire",
)


def acquire_reply(reply: int | list[int]) -> tuple[int, int, int]:
    """ACQUIRE's reply as ``(token or 0, holder pttl, counter)``."""
    if isinstance(reply, int):
        return reply, 0, reply
    token, pttl, counter = reply
    return int(token), int(pttl), int(counter)


# ARGV[1] owner -> 1 deleted, 0 not the owner (nothing changed).
RELEASE = LuaScript(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
""",
    name="lock_release",
)

# ARGV[1] owner, ARGV[2] ttl ms -> 1 extended, 0 not the owner (nothing changed).
EXTEND = LuaScript(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
""",
    name="lock_extend",
)

# Redlock phase 2. ARGV[1] owner, ARGV[2] token -> 1 if this node's counter is now >= token
# (raised when lower), 0 if the owner no longer holds the lease here (nothing changed).
RAISE_COUNTER = LuaScript(
    """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local c = tonumber(redis.call('GET', KEYS[2]) or '0')
if c < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[2])
end
return 1
""",
    name="redlock_raise_counter",
)
