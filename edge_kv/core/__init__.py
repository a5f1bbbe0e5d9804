"""Pure algorithms (no I/O, stdlib only) shared by every backend.

Time is always an ``int`` count of microseconds and state is always integers, so the
Python reference, the Redis Lua scripts (IEEE doubles, exact below 2**53) and the
Durable Object code compute bit-identical decisions.
"""

from edge_kv.core.decision import Decision
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
    "Decision",
    "FixedWindow",
    "Lease",
    "LeaseState",
    "SlidingLog",
    "SlidingWindowCounter",
    "TokenBucket",
    "decide_tiers",
    "fencing_accepts",
    "quorum",
    "redlock_validity_ms",
]
