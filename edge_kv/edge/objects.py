"""The Durable Object classes edge_kv ships, ready to export from a Worker's entry module.

    # src/entry.py
    from edge_kv.edge.objects import LockService, RateLimiter   # noqa: F401 (wrangler finds them)

and in ``wrangler.toml`` bind them (``class_name = "RateLimiter"`` / ``"LockService"``) with
a ``new_sqlite_classes`` migration. Each shell owns the logic object and exposes its RPC
methods through :func:`~edge_kv.edge.runtime.rpc_method`, so refusals reach the caller
as typed errors. This module imports ``workers`` (the runtime SDK): import it only from a
Worker.
"""

from __future__ import annotations

from typing import Any

from workers import DurableObject

from edge_kv.edge.env import env_flag
from edge_kv.edge.locks.durable import LockObject
from edge_kv.edge.locks.settings import lock_limits
from edge_kv.edge.ratelimit.durable import RateLimitObject
from edge_kv.edge.runtime import rpc_method

__all__ = ["LockService", "RateLimiter"]


class RateLimiter(DurableObject):  # type: ignore[no-untyped-call]  # SDK __init_subclass__ is untyped
    """One object per limited key (or key shard): exact, globally consistent decisions."""

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.logic = RateLimitObject(ctx.storage, test_clock=env_flag(env, "EDGE_KV_TEST_CLOCK"))

    @rpc_method
    async def decide(self, spec_json: str, key: str, cost: int, now_us: int | None = None) -> Any:
        return await self.logic.decide(spec_json, key, cost, now_us)

    @rpc_method
    async def state(self, key: str) -> Any:
        return await self.logic.state(key)

    async def alarm(self, alarm_info: Any = None) -> None:
        await self.logic.alarm()


class LockService(DurableObject):  # type: ignore[no-untyped-call]  # SDK __init_subclass__ is untyped
    """One object per resource: lease, fencing token, FIFO waiters, alarm-driven expiry."""

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.logic = LockObject(ctx.storage, lock_limits(env))

    @rpc_method
    async def acquire(self, owner: str, ttl_ms: int, wait_ms: int = 0) -> Any:
        return await self.logic.acquire(owner, ttl_ms, wait_ms)

    @rpc_method
    async def leave(self, owner: str) -> Any:
        return await self.logic.leave(owner)

    @rpc_method
    async def extend(self, owner: str, ttl_ms: int) -> Any:
        return await self.logic.extend(owner, ttl_ms)

    @rpc_method
    async def release(self, owner: str) -> Any:
        return await self.logic.release(owner)

    @rpc_method
    async def status(self) -> Any:
        return await self.logic.status()

    async def alarm(self, alarm_info: Any = None) -> None:
        await self.logic.alarm()
