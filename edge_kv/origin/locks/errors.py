"""Typed errors of the origin locks: the lock family of :mod:`edge_kv.core.errors`, shared
with the Durable Object lock at the edge. ``except LockError`` is the one catch-all a
service needs."""

from __future__ import annotations

from edge_kv.core.errors import (
    LockAcquireTimeout,
    LockError,
    LockNotOwned,
    LockUnavailable,
    StaleFencingToken,
)

__all__ = ["LockAcquireTimeout", "LockError", "LockNotOwned", "LockUnavailable", "StaleFencingToken"]
