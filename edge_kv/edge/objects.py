"""The Durable Object classes edge_kv ships, ready to export from a Worker's entry module.

    # src/entry.py
    from edge_kv.edge.objects import LockService, RateLimiter   # wrangler finds them here

and in ``wrangler.toml`` bind them (``class_name = "RateLimiter"`` / ``"LockService"``) with
a ``new_sqlite_classes`` migration. Each class is the runtime's ``DurableObject`` plus the
RPC surface defined next to its logic (``RateLimiterRpc``, ``LockServiceRpc``), whose
methods answer through :func:`~edge_kv.edge.runtime.rpc_method` so refusals reach the
caller as typed errors. This module imports ``workers`` (the runtime SDK): import it only
from a Worker.
"""

from __future__ import annotations

from typing import Any

from workers import DurableObject

from edge_kv.edge.locks.durable import LockServiceRpc
from edge_kv.edge.ratelimit.durable import RateLimiterRpc

__all__ = ["LockService", "RateLimiter"]


class RateLimiter(RateLimiterRpc, DurableObject):  # type: ignore[no-untyped-call]  # SDK __init_subclass__ is untyped
    """One object per limited key (or key shard): exact, globally consistent decisions."""

    def __init__(self, ctx: Any, env: Any) -> None:
        DurableObject.__init__(self, ctx, env)
        RateLimiterRpc.__init__(self, ctx, env)


class LockService(LockServiceRpc, DurableObject):  # type: ignore[no-untyped-call]  # SDK __init_subclass__ is untyped
    """One object per resource: lease, fencing token, FIFO waiters, alarm-driven expiry."""

    def __init__(self, ctx: Any, env: Any) -> None:
        DurableObject.__init__(self, ctx, env)
        LockServiceRpc.__init__(self, ctx, env)
