"""Fenced writes: storage that refuses a write carrying an outdated fencing token.

A lock lease can end while its holder still believes it holds it (GC pause, SIGSTOP,
a slow network). A TTL cannot prevent that holder from writing afterwards; the
storage can, if every write carries the holder's fencing token and the storage keeps
the highest token it has seen per resource (:func:`edge_kv.core.lease.fencing_accepts`):
a token lower than that is refused, an equal one (same holder, several writes) and a
higher one (a newer holder) are accepted and the highest is raised.

Check and write happen in one Lua script, so there is no window between them. The
fence lives in ``{namespace}:{resource}`` and never expires (an expired fence would
re-admit a stale holder). Tokens are plain positive ints below 2**53, whoever minted
them: :class:`~edge_kv.origin.locks.redis_lock.RedisLock`,
:class:`~edge_kv.origin.locks.redlock.Redlock` or the edge Durable Object lock. Use one
minting authority per resource: two independent token sequences for one resource
would refuse each other's writes.

Redis Cluster: the fence key and the data key must hash to one slot; put the same
``{hash tag}`` in both (the fence key is ``namespace:{resource}``, so a data key that
contains ``{resource}`` matches).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from edge_kv.core.validate import check_key, check_positive_int
from edge_kv.origin._scripts import LuaScript
from edge_kv.origin.locks._io import (
    DEFAULT_OP_TIMEOUT_S,
    bounded,
    check_op_timeout,
    check_token,
    run,
)
from edge_kv.origin.locks.errors import StaleFencingToken

DEFAULT_FENCE_NAMESPACE = "edge_kv:fence"

# KEYS[1] fence, KEYS[2] data key (may be absent for "observe")
# ARGV[1] token, ARGV[2] op, ARGV[3] value, ARGV[4] px (0 = no expiry)
# -> {accepted 0/1, highest token (string), op result or false}
FENCED_WRITE = LuaScript(
    """
local token = tonumber(ARGV[1])
local cur = redis.call('GET', KEYS[1])
local highest = cur and tonumber(cur) or nil
if highest and token < highest then
  return {0, cur, false}
end
if not highest or token > highest then
  redis.call('SET', KEYS[1], ARGV[1])
  cur = ARGV[1]
end
local op = ARGV[2]
local result = false
if op == 'set' then
  local px = tonumber(ARGV[4])
  if px > 0 then
    redis.call('SET', KEYS[2], ARGV[3], 'PX', px)
  else
    redis.call('SET', KEYS[2], ARGV[3])
  end
  result = 1
elseif op == 'incrby' then
  result = redis.call('INCRBY', KEYS[2], ARGV[3])
elseif op == 'rpush' then
  result = redis.call('RPUSH', KEYS[2], ARGV[3])
elseif op == 'del' then
  result = redis.call('DEL', KEYS[2])
end
return {1, cur, result}
""",
    name="fenced_write",
)


@dataclass(frozen=True, slots=True)
class FenceResult:
    """An accepted fenced operation: the fence after it and the data command's reply."""

    highest: int
    result: int | None


class FencedStore:
    """Redis storage guarded by fencing tokens, one fence per resource.

    Every method raises :class:`StaleFencingToken` (and writes nothing) when ``token``
    is lower than the highest token seen for ``resource``, ``ValueError`` on bad input
    (nothing sent), and :class:`~edge_kv.origin.locks.errors.LockUnavailable` when Redis
    does not answer within ``op_timeout`` seconds.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        namespace: str = DEFAULT_FENCE_NAMESPACE,
        op_timeout: float = DEFAULT_OP_TIMEOUT_S,
    ) -> None:
        self.redis = redis
        self.namespace = check_key(namespace)
        self.op_timeout = check_op_timeout(op_timeout)

    def fence_key(self, resource: str) -> str:
        return f"{self.namespace}:{{{check_key(resource)}}}"

    async def _call(
        self, resource: str, token: int, op: str, key: str | None, value: str | int | bytes, px: int
    ) -> FenceResult:
        fence = self.fence_key(resource)
        check_token(token)
        keys = [fence] if key is None else [fence, check_key(key)]
        reply = await run(
            FENCED_WRITE,
            self.redis,
            keys,
            [token, op, value, px],
            self.op_timeout,
            f"fenced {op} on {resource!r}",
        )
        accepted, highest_raw, result = reply
        highest = int(highest_raw)
        if not accepted:
            raise StaleFencingToken(resource, token, highest)
        return FenceResult(highest, None if result is None else int(result))

    async def set(
        self, resource: str, token: int, key: str, value: str | bytes | int, *, px: int | None = None
    ) -> FenceResult:
        """``SET key value [PX px]`` if ``token`` is current for ``resource``."""
        if isinstance(value, bool) or not isinstance(value, (str, bytes, int)):
            raise ValueError(f"value must be str, bytes or int, got {type(value).__name__}")
        return await self._call(
            resource, token, "set", key, value, 0 if px is None else check_positive_int("px", px)
        )

    async def incrby(self, resource: str, token: int, key: str, amount: int = 1) -> FenceResult:
        """``INCRBY key amount`` if ``token`` is current; ``result`` is the new value."""
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise ValueError(f"amount must be an integer, got {type(amount).__name__}")
        return await self._call(resource, token, "incrby", key, amount, 0)

    async def rpush(self, resource: str, token: int, key: str, value: str | bytes | int) -> FenceResult:
        """``RPUSH key value`` if ``token`` is current; ``result`` is the new length."""
        if isinstance(value, bool) or not isinstance(value, (str, bytes, int)):
            raise ValueError(f"value must be str, bytes or int, got {type(value).__name__}")
        return await self._call(resource, token, "rpush", key, value, 0)

    async def delete(self, resource: str, token: int, key: str) -> FenceResult:
        """``DEL key`` if ``token`` is current."""
        return await self._call(resource, token, "del", key, "", 0)

    async def observe(self, resource: str, token: int) -> int:
        """Raise the fence to ``token`` without writing data (e.g. a new holder announcing
        itself before a long computation, so an older holder's writes are refused at once)."""
        return (await self._call(resource, token, "observe", None, "", 0)).highest

    async def highest(self, resource: str) -> int | None:
        """The highest token seen for ``resource``, ``None`` if none yet."""
        raw = await bounded(self.redis.get(self.fence_key(resource)), self.op_timeout, "read fence")
        return None if raw is None else int(raw)


async def fenced_write(
    redis: aioredis.Redis,
    resource: str,
    token: int,
    key: str,
    value: str | bytes | int,
    *,
    px: int | None = None,
    namespace: str = DEFAULT_FENCE_NAMESPACE,
    op_timeout: float = DEFAULT_OP_TIMEOUT_S,
) -> FenceResult:
    """One-shot :meth:`FencedStore.set`: write ``key`` only if ``token`` is not stale."""
    return await FencedStore(redis, namespace=namespace, op_timeout=op_timeout).set(
        resource, token, key, value, px=px
    )
