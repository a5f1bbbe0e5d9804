"""Bounds of the lock service, from vars (all optional):

``EDGE_KV_LOCK_MAX_TTL_MS`` (default 300000), ``EDGE_KV_LOCK_MAX_WAIT_MS`` (60000),
``EDGE_KV_LOCK_MAX_WAITERS`` (256), ``EDGE_KV_LOCK_POLL_GRACE_MS`` (2000). A var set to
something out of range is an ``InvalidInput`` naming it.
"""

from __future__ import annotations

from typing import Any

from edge_kv.edge.env import env_int
from edge_kv.edge.locks.state import LockLimits

__all__ = ["lock_limits"]


def lock_limits(env: Any) -> LockLimits:
    return LockLimits(
        max_ttl_ms=env_int(env, "EDGE_KV_LOCK_MAX_TTL_MS", 300_000, 1, 86_400_000),
        max_wait_ms=env_int(env, "EDGE_KV_LOCK_MAX_WAIT_MS", 60_000, 0, 3_600_000),
        max_waiters=env_int(env, "EDGE_KV_LOCK_MAX_WAITERS", 256, 1, 100_000),
        poll_grace_ms=env_int(env, "EDGE_KV_LOCK_POLL_GRACE_MS", 2_000, 50, 600_000),
    )
