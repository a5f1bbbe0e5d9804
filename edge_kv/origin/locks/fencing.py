"""Fenced writes: storage that refuses a write carrying an outdated fencing token.

A lock lease can end while its holder still believes it holds it (GC pause, SIGSTOP,
a slow network). A TTL cannot prevent that holder from writing afterwards; the
storage can, if every write carries the holder's fencing token (and owner) and the
storage keeps, per resource, the highest token it has seen together with the owner that
first presented it. The rule is :func:`edge_kv.core.lease.fencing_accepts`:

* a higher token is accepted (a newer holder) and the fence moves to it;
* a lower token is refused (:class:`StaleFencingToken`), nothing is written;
* an equal token is accepted only from the owner that first presented it. Equal tokens
  from two owners mean a token was issued twice (e.g. a majority of Redlock nodes
  restarted without persistence); the first owner to reach the storage keeps it, the
  other is refused like a stale holder, so the two holders' writes never interleave.

Pass the owner to get the last guarantee: give the lock itself (``store.set(resource,
lock, key, value)`` takes ``lock.token`` and ``lock.owner``) or ``owner=...`` with a
plain token. Writes with a plain token and no owner are "anonymous": they are told
apart from owned ones, but not from each other.

Check and write happen in one Lua script (``fenced_write.lua``), so there is no window
between them. The fence lives in ``{namespace}:{resource}`` (``"<token>"`` or
``"<token>|<owner>"``) and never expires (an expired fence would re-admit a stale
holder). Tokens are plain positive ints below 2**53, whoever minted them:
:class:`~edge_kv.origin.locks.redis_lock.RedisLock`,
:class:`~edge_kv.origin.locks.redlock.Redlock` or the edge Durable Object lock. Use one
minting authority per resource: two independent token sequences for one resource
would refuse each other's writes.

Redis Cluster: the fence key and the data key must hash to one slot. The fence key is
``namespace:{resource}``, so a data key whose hash tag is the resource
(``{invoice:42}:state``) matches; any other data key is refused with
:class:`~edge_kv.origin._redis.CrossSlotKeys` before anything is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from edge_kv.core.validate import check_key, check_positive_int
from edge_kv.origin import _redis
from edge_kv.origin._redis import CrossSlotKeys
from edge_kv.origin.locks._io import (
    DEFAULT_OP_TIMEOUT_S,
    bounded,
    check_op_timeout,
    check_token,
    run,
)
from edge_kv.origin.locks._lua import FENCED_WRITE
from edge_kv.origin.locks.errors import LockNotOwned, StaleFencingToken

DEFAULT_FENCE_NAMESPACE = "edge_kv:fence"
MAX_OWNER_BYTES = 512


class FenceHolder(Protocol):
    """Anything with a fencing ``token`` and an ``owner``: a RedisLock/Redlock, a
    :class:`edge_kv.core.lease.Lease`."""

    @property
    def token(self) -> int | None: ...

    @property
    def owner(self) -> str | None: ...


def _check_owner(owner: object) -> str:
    if not isinstance(owner, str):
        raise ValueError(f"owner must be a str, got {type(owner).__name__}")
    if len(owner.encode("utf-8")) > MAX_OWNER_BYTES:
        raise ValueError(f"owner must be at most {MAX_OWNER_BYTES} UTF-8 bytes")
    return owner


def _credentials(token: int | FenceHolder, owner: str | None) -> tuple[int, str]:
    """``(token, owner)`` from a plain token (+ optional owner) or a lock/lease."""
    if isinstance(token, int):
        return check_token(token), "" if owner is None else _check_owner(owner)
    if not hasattr(token, "token") or not hasattr(token, "owner"):
        raise ValueError(
            f"token must be an int or a lock/lease with .token and .owner, got {type(token).__name__}"
        )
    held, held_owner = token.token, token.owner
    if held is None or held_owner is None:
        raise LockNotOwned(f"{type(token).__name__} holds no lease: nothing to write with")
    if owner is not None and owner != held_owner:
        raise ValueError("owner= disagrees with the owner of the lock given as token")
    return check_token(held), _check_owner(held_owner)


def _parse_fence(raw: Any) -> tuple[int, str]:
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    token, _, owner = text.partition("|")
    return int(token), owner


@dataclass(frozen=True, slots=True)
class FenceResult:
    """An accepted fenced operation: the fence after it and the data command's reply."""

    highest: int
    result: int | None


class FencedStore:
    """Redis storage guarded by fencing tokens, one fence per resource.

    ``redis`` is a ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``.
    Every method raises :class:`StaleFencingToken` (and writes nothing) when the fence
    refuses ``token`` (lower than the highest seen, or equal to it from another owner),
    ``ValueError`` on bad input (nothing sent; :class:`CrossSlotKeys` for a data key
    outside the resource's cluster slot), and
    :class:`~edge_kv.origin.locks.errors.LockUnavailable` when Redis does not answer
    within ``op_timeout`` seconds.
    """

    def __init__(
        self,
        redis: Any,
        *,
        namespace: str = DEFAULT_FENCE_NAMESPACE,
        op_timeout: float = DEFAULT_OP_TIMEOUT_S,
    ) -> None:
        self.redis = _redis.prepare(redis)
        self.namespace = check_key(namespace)
        self.op_timeout = check_op_timeout(op_timeout)

    def fence_key(self, resource: str) -> str:
        return f"{self.namespace}:{{{check_key(resource)}}}"

    def _check_slot(self, resource: str, fence: str, key: str) -> None:
        if _redis.is_cluster(self.redis) and _redis.slot(fence) != _redis.slot(key):
            raise CrossSlotKeys(
                f"FencedStore on Redis Cluster: data key {key!r} and the fence of {resource!r} "
                f"({fence!r}) hash to different slots; name the data key with the resource as its "
                f"hash tag, e.g. '{{{resource}}}:state' instead of '{resource}:state'"
            )

    async def _call(
        self,
        resource: str,
        token: int | FenceHolder,
        owner: str | None,
        op: str,
        key: str | None,
        value: str | int | bytes,
        px: int,
    ) -> FenceResult:
        fence = self.fence_key(resource)
        tok, own = _credentials(token, owner)
        keys = [fence]
        if key is not None:
            keys.append(check_key(key))
            self._check_slot(resource, fence, key)
        reply = await run(
            FENCED_WRITE,
            self.redis,
            keys,
            [tok, own, op, value, px],
            self.op_timeout,
            f"fenced {op} on {resource!r}",
        )
        accepted, highest_raw, seen_raw, result = reply
        highest = int(highest_raw)
        if not accepted:
            seen = seen_raw.decode() if isinstance(seen_raw, bytes) else str(seen_raw)
            reason = ""
            if tok == highest:
                reason = (
                    f"fencing token {tok} for {resource!r} was first used at this storage by "
                    f"{'another owner' if seen else 'a write without owner'}; a token issued "
                    "twice is honoured for its first owner only"
                )
            raise StaleFencingToken(resource, tok, highest, reason)
        return FenceResult(highest, None if result is None else int(result))

    async def set(
        self,
        resource: str,
        token: int | FenceHolder,
        key: str,
        value: str | bytes | int,
        *,
        px: int | None = None,
        owner: str | None = None,
    ) -> FenceResult:
        """``SET key value [PX px]`` if ``token`` (and ``owner``) is current for ``resource``.

        ``token`` is the fencing token, or the lock itself (its token and owner are used).
        """
        if isinstance(value, bool) or not isinstance(value, (str, bytes, int)):
            raise ValueError(f"value must be str, bytes or int, got {type(value).__name__}")
        return await self._call(
            resource, token, owner, "set", key, value, 0 if px is None else check_positive_int("px", px)
        )

    async def incrby(
        self, resource: str, token: int | FenceHolder, key: str, amount: int = 1, *, owner: str | None = None
    ) -> FenceResult:
        """``INCRBY key amount`` if ``token`` is current; ``result`` is the new value."""
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise ValueError(f"amount must be an integer, got {type(amount).__name__}")
        return await self._call(resource, token, owner, "incrby", key, amount, 0)

    async def rpush(
        self,
        resource: str,
        token: int | FenceHolder,
        key: str,
        value: str | bytes | int,
        *,
        owner: str | None = None,
    ) -> FenceResult:
        """``RPUSH key value`` if ``token`` is current; ``result`` is the new length."""
        if isinstance(value, bool) or not isinstance(value, (str, bytes, int)):
            raise ValueError(f"value must be str, bytes or int, got {type(value).__name__}")
        return await self._call(resource, token, owner, "rpush", key, value, 0)

    async def delete(
        self, resource: str, token: int | FenceHolder, key: str, *, owner: str | None = None
    ) -> FenceResult:
        """``DEL key`` if ``token`` is current."""
        return await self._call(resource, token, owner, "del", key, "", 0)

    async def observe(self, resource: str, token: int | FenceHolder, *, owner: str | None = None) -> int:
        """Raise the fence to ``token`` without writing data (e.g. a new holder announcing
        itself before a long computation, so an older holder's writes are refused at once).
        Refused like a write (:class:`StaleFencingToken`)."""
        return (await self._call(resource, token, owner, "observe", None, "", 0)).highest

    async def highest(self, resource: str) -> int | None:
        """The highest token seen for ``resource``, ``None`` if none yet."""
        fence = await self.fence(resource)
        return None if fence is None else fence[0]

    async def fence(self, resource: str) -> tuple[int, str] | None:
        """``(highest token, owner that first presented it or "")``, ``None`` if none yet."""
        raw = await bounded(self.redis.get(self.fence_key(resource)), self.op_timeout, "read fence")
        return None if raw is None else _parse_fence(raw)


async def fenced_write(
    redis: Any,
    resource: str,
    token: int | FenceHolder,
    key: str,
    value: str | bytes | int,
    *,
    px: int | None = None,
    owner: str | None = None,
    namespace: str = DEFAULT_FENCE_NAMESPACE,
    op_timeout: float = DEFAULT_OP_TIMEOUT_S,
) -> FenceResult:
    """One-shot :meth:`FencedStore.set`: write ``key`` only if ``token`` is not stale."""
    return await FencedStore(redis, namespace=namespace, op_timeout=op_timeout).set(
        resource, token, key, value, px=px, owner=owner
    )
