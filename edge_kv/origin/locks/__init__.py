"""Origin locks: single-instance Redis lock, Redlock over N Redis nodes, fencing tokens
with fenced writes, PostgreSQL advisory locks. See docs/origin-locks.md."""

from edge_kv.origin.locks.errors import (
    LockAcquireTimeout,
    LockError,
    LockNotOwned,
    LockUnavailable,
    StaleFencingToken,
)
from edge_kv.origin.locks.fencing import FencedStore, FenceResult, fenced_write

__all__ = [
    "FenceResult",
    "FencedStore",
    "LockAcquireTimeout",
    "LockError",
    "LockNotOwned",
    "LockUnavailable",
    "StaleFencingToken",
    "fenced_write",
]
