"""Pure algorithms (no I/O, stdlib only) shared by every backend.

Time is always an ``int`` count of microseconds and state is always integers, so the
Python reference, the Redis Lua scripts (IEEE doubles, exact below 2**53) and the
Durable Object code compute bit-identical decisions.
"""

from edge_kv.core.backoff import FullJitter, parse_retry_after
from edge_kv.core.breaker import BreakerConfig, BreakerDecision
from edge_kv.core.clock import Clock, FakeClock, SystemClock
from edge_kv.core.decision import Decision
from edge_kv.core.errors import (
    Conflict,
    EdgeKvError,
    InvalidInput,
    LockAcquireTimeout,
    LockError,
    LockNotOwned,
    LockUnavailable,
    NotFound,
    StaleFencingToken,
    Unavailable,
    UpstreamFailed,
    error_from_code,
)
from edge_kv.core.lease import (
    Lease,
    LeaseState,
    fencing_accepts,
    quorum,
    redlock_validity_ms,
)
from edge_kv.core.ratelimit import (
    FixedWindow,
    SlidingLog,
    SlidingWindowCounter,
    TokenBucket,
    decide_tiers,
)

__all__ = [
    "BreakerConfig",
    "BreakerDecision",
    "Clock",
    "Conflict",
    "Decision",
    "EdgeKvError",
    "FakeClock",
    "FixedWindow",
    "FullJitter",
    "InvalidInput",
    "Lease",
    "LeaseState",
    "LockAcquireTimeout",
    "LockError",
    "LockNotOwned",
    "LockUnavailable",
    "NotFound",
    "SlidingLog",
    "SlidingWindowCounter",
    "StaleFencingToken",
    "SystemClock",
    "TokenBucket",
    "Unavailable",
    "UpstreamFailed",
    "decide_tiers",
    "error_from_code",
    "fencing_accepts",
    "parse_retry_after",
    "quorum",
    "redlock_validity_ms",
]
