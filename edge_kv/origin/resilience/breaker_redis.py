"""Breaker state shared by every replica through one Redis hash per breaker.

Consistency: each permission check and each outcome is one ``EVALSHA`` of
``breaker.lua`` (the mirror of :mod:`edge_kv.core.breaker`), so every step is atomic and all
replicas see one linearizable state machine: one window, one OPEN period, one global
budget of HALF_OPEN probes. Time comes from the Redis server (``TIME``) by default, so
replica clock skew does not matter. All replicas must use the same
:class:`BreakerConfig` for a name (the script takes the config with each call).

When Redis fails or answers slower than ``timeout`` the breaker does not hang and does
not raise: it switches to ``on_redis_error`` for ``redis_retry_after`` seconds —
``"local"`` (default: a per-process breaker with the same config takes over),
``"open"`` (fail-open: every call allowed, nothing recorded) or ``"closed"``
(fail-closed: every call refused). ``redis_errors`` counts the failures.
"""

from __future__ import annotations

from typing import Any, Literal

from redis.exceptions import RedisError

from edge_kv.core import breaker as policy
from edge_kv.core.breaker import BreakerConfig
from edge_kv.core.breaker import BreakerDecision as Verdict
from edge_kv.core.clock import SYSTEM_CLOCK, Clock
from edge_kv.core.errors import Unavailable
from edge_kv.origin import _redis
from edge_kv.origin._scripts import LuaScript
from edge_kv.origin.resilience.breaker import LocalBreakerStore

BREAKER_SCRIPT = LuaScript.from_package("edge_kv.origin.resilience", "breaker.lua")
LUA = BREAKER_SCRIPT.source


class RedisBreakerStore:
    """A :class:`~.breaker.BreakerStore` on Redis: a ``redis.asyncio.Redis`` or
    ``redis.asyncio.cluster.RedisCluster`` client (one key per breaker). A refused
    connection counts as a Redis failure at once, without waiting out ``timeout``."""

    def __init__(
        self,
        redis: Any,
        *,
        prefix: str = "edge_kv:breaker:",
        timeout: float = 0.25,
        on_redis_error: Literal["local", "open", "closed"] = "local",
        redis_retry_after: float = 5.0,
        ttl: float = 86_400.0,
        use_server_time: bool = True,
        clock: Clock | None = None,
    ) -> None:
        if on_redis_error not in ("local", "open", "closed"):
            raise ValueError(f"on_redis_error must be 'local', 'open' or 'closed', got {on_redis_error!r}")
        if not timeout > 0 or not redis_retry_after >= 0 or not ttl >= 1:
            raise ValueError("timeout must be > 0, redis_retry_after >= 0 and ttl >= 1 second")
        self.redis = _redis.prepare(redis)
        self.prefix = prefix
        self.timeout = timeout
        self.on_redis_error = on_redis_error
        self.redis_retry_after = redis_retry_after
        self.ttl_ms = int(ttl * 1000)
        self._ttl = str(self.ttl_ms)
        self.use_server_time = use_server_time
        self.clock = clock or SYSTEM_CLOCK
        self.local = LocalBreakerStore(self.clock)
        self.redis_errors = 0
        self._down_until = float("-inf")

    @property
    def degraded(self) -> bool:
        """True while Redis is considered down and the fallback mode is in force."""
        return self.clock.monotonic() < self._down_until

    async def _eval(self, name: str, cfg: BreakerConfig, op: str, extra: list[Any]) -> Verdict | None:
        if self.degraded:
            return None
        now = "" if self.use_server_time else str(int(self.clock.time() * 1000))
        args = [op, now, self._ttl, *cfg.lua_argv, *extra]
        try:
            r = await _redis.run_script(
                BREAKER_SCRIPT, self.redis, [self.prefix + name], args, self.timeout, f"breaker {name!r}"
            )
        except (Unavailable, RedisError):
            self.redis_errors += 1
            self._down_until = self.clock.monotonic() + self.redis_retry_after
            return None
        return Verdict(bool(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), True)

    async def acquire(self, name: str, cfg: BreakerConfig) -> Verdict:
        v = await self._eval(name, cfg, "a", [])
        if v is not None:
            return v
        if self.on_redis_error == "local":
            return await self.local.acquire(name, cfg)
        if self.on_redis_error == "open":
            return Verdict(True, -1, policy.CLOSED, 0, -1)
        return Verdict(False, -1, policy.OPEN, int(self.redis_retry_after * 1000), -1)

    async def record(
        self, name: str, cfg: BreakerConfig, permit: Verdict, kind: int, duration_ms: int
    ) -> Verdict:
        if permit.shared:
            v = await self._eval(name, cfg, "r", [str(permit.gen), str(kind), str(duration_ms)])
            if v is not None:
                return v
            return Verdict(False, permit.gen, permit.state, 0, -1)
        if permit.gen < 0:  # fail-open permission: nothing to record
            return Verdict(False, permit.gen, permit.state, 0, -1)
        return await self.local.record(name, cfg, permit, kind, duration_ms)

    async def force(self, name: str, cfg: BreakerConfig, state: int) -> Verdict:
        v = await self._eval(name, cfg, "f", [str(state)])
        local = await self.local.force(name, cfg, state)
        return v if v is not None else local
