"""Single-instance Redis lock with fencing tokens.

Acquire is one Lua script: ``SET key owner NX PX ttl`` and, on success, ``INCR`` of the
resource's fencing counter — so the strictly increasing token costs no extra round
trip. Release (compare-and-delete) and extend (compare-and-pexpire) are one script each
and act only if the stored owner is ours, so a holder whose lease expired can never
delete or prolong its successor's lease.

Safety rests on one Redis: if it loses the key (restart without persistence, failover to
a replica that had not received it) two holders can overlap; fenced writes
(:mod:`edge_kv.origin.locks.fencing`) still refuse the older one, as long as the fencing
counter survived. For tolerance of node loss use :class:`~edge_kv.origin.locks.redlock.Redlock`.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from edge_kv.core.lease import DEFAULT_DRIFT_FACTOR
from edge_kv.origin import _redis
from edge_kv.origin.locks._base import (
    DEFAULT_BLOCKING_TIMEOUT_S,
    DEFAULT_RENEW_FRACTION,
    DEFAULT_RETRY_DELAY_MS,
    DEFAULT_TTL_MS,
    Attempt,
    LeaseLock,
)
from edge_kv.origin.locks._io import DEFAULT_OP_TIMEOUT_S, bounded, run
from edge_kv.origin.locks._lua import ACQUIRE, EXTEND, RELEASE, acquire_reply
from edge_kv.origin.locks.errors import LockNotOwned, LockUnavailable

DEFAULT_LOCK_NAMESPACE = "edge_kv:lock"


class RedisLock(LeaseLock):
    """``async with RedisLock(redis, "invoice:42", ttl_ms=10_000) as lock: ... lock.token``

    ``redis`` is a ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``
    client (both keys of a lock share the ``{name}`` hash tag, so one slot). Every Redis
    command is bounded by ``op_timeout`` seconds (:class:`LockUnavailable` after it; a
    refused connection raises it at once). ``blocking_timeout`` bounds :meth:`acquire` (``None``: wait forever);
    retries sleep a random ``retry_delay_ms`` interval (shortened to the holder's
    remaining TTL when that is sooner). With ``auto_renew`` a task extends the lease
    every ``ttl_ms * renew_fraction`` until release; :attr:`lost` reports a failed renewal.
    The scripts go through the client's auto-pipelined transport
    (:mod:`edge_kv.origin._pipeline`); ``autopipeline=False`` uses redis-py's pool instead.
    """

    def __init__(
        self,
        redis: Any,
        name: str,
        *,
        ttl_ms: int = DEFAULT_TTL_MS,
        blocking_timeout: float | None = DEFAULT_BLOCKING_TIMEOUT_S,
        retry_delay_ms: tuple[int, int] = DEFAULT_RETRY_DELAY_MS,
        auto_renew: bool = False,
        renew_fraction: float = DEFAULT_RENEW_FRACTION,
        drift_factor: float = DEFAULT_DRIFT_FACTOR,
        op_timeout: float = DEFAULT_OP_TIMEOUT_S,
        namespace: str = DEFAULT_LOCK_NAMESPACE,
        autopipeline: bool = True,
    ) -> None:
        super().__init__(
            name,
            ttl_ms=ttl_ms,
            blocking_timeout=blocking_timeout,
            retry_delay_ms=retry_delay_ms,
            auto_renew=auto_renew,
            renew_fraction=renew_fraction,
            drift_factor=drift_factor,
            op_timeout=op_timeout,
            namespace=namespace,
        )
        self.redis = _redis.prepare(redis)
        self.autopipeline = bool(autopipeline)

    async def _attempt(self, owner: str, until: float) -> Attempt:
        started = time.monotonic()
        token, pttl, _counter = acquire_reply(
            await run(
                ACQUIRE,
                self.redis,
                [self.key, self.counter_key],
                [owner, self.ttl_ms],
                self._budget(until),
                f"acquire {self.name!r}",
                self.autopipeline,
            )
        )
        if not token:
            return Attempt(None, holder_pttl_ms=int(pttl))
        validity = self._validity(self.ttl_ms, time.monotonic() - started)
        if validity <= 0:
            # The reply came too late to rely on: give the lease back (if time is left;
            # otherwise it expires by its TTL, which has all but run out anyway).
            await self._release_quietly(owner, self._budget(until))
            return Attempt(None, detail="acquired too late to be valid")
        return Attempt(int(token), validity_ms=validity)

    async def _release_quietly(self, owner: str, limit_s: float) -> None:
        if limit_s <= 0:
            return
        with contextlib.suppress(LockUnavailable):
            await run(RELEASE, self.redis, [self.key], [owner], limit_s, "release", self.autopipeline)

    async def _extend(self, owner: str, ttl_ms: int) -> int:
        started = time.monotonic()
        ok = await run(
            EXTEND,
            self.redis,
            [self.key],
            [owner, ttl_ms],
            self.op_timeout,
            f"extend {self.name!r}",
            self.autopipeline,
        )
        if not ok:
            raise LockNotOwned(f"lock {self.name!r} is no longer held by this owner; not extended")
        return self._validity(ttl_ms, time.monotonic() - started)

    async def _release(self, owner: str) -> None:
        ok = await run(
            RELEASE,
            self.redis,
            [self.key],
            [owner],
            self.op_timeout,
            f"release {self.name!r}",
            self.autopipeline,
        )
        if not ok:
            raise LockNotOwned(f"lock {self.name!r} is no longer held by this owner; nothing released")

    async def locked(self) -> bool:
        """Whether anyone holds the lock right now."""
        return bool(await bounded(self.redis.exists(self.key), self.op_timeout, "locked"))

    async def owned(self) -> bool:
        """Whether Redis still stores this object's owner value (the lease is ours)."""
        if self._owner is None:
            return False
        raw = await bounded(self.redis.get(self.key), self.op_timeout, "owned")
        if isinstance(raw, bytes):
            raw = raw.decode()
        return bool(raw == self._owner)
