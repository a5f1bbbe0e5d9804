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
from edge_kv.origin.locks.pg_advisory import (
    PgAdvisoryLock,
    advisory_key,
    advisory_transaction,
    try_xact_lock,
    xact_lock,
)
from edge_kv.origin.locks.redis_lock import RedisLock
from edge_kv.origin.locks.redlock import Redlock

__all__ = [
    "FenceResult",
    "FencedStore",
    "LockAcquireTimeout",
    "LockError",
    "LockNotOwned",
    "LockUnavailable",
    "PgAdvisoryLock",
    "RedisLock",
    "Redlock",
    "StaleFencingToken",
    "advisory_key",
    "advisory_transaction",
    "fenced_write",
    "try_xact_lock",
    "xact_lock",
]
