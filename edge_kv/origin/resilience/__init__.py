"""Origin resilience: circuit breaker (local or Redis-shared), retry with jittered
backoff and a retry budget, bulkheads, and an httpx transport combining them.

Composition order is ``retry(breaker(bulkhead(call)))`` (see :mod:`.compose`).
``breaker_redis`` and ``transport`` import redis / httpx and are not imported here.
"""

from edge_kv.origin.resilience.breaker import BreakerMetrics, CircuitBreaker, LocalBreakerStore
from edge_kv.origin.resilience.breaker_policy import BreakerConfig
from edge_kv.origin.resilience.budget import RetryBudget
from edge_kv.origin.resilience.bulkhead import Bulkhead, BulkheadMetrics, TieredBulkhead, TierLimits
from edge_kv.origin.resilience.clock import Clock, FakeClock, SystemClock
from edge_kv.origin.resilience.compose import Resilience
from edge_kv.origin.resilience.errors import BulkheadFull, BulkheadTimeout, CircuitOpenError, ResilienceError
from edge_kv.origin.resilience.retry import (
    DecorrelatedJitter,
    Exponential,
    FullJitter,
    RetryableStatus,
    RetryPolicy,
    RetryVerdict,
    parse_retry_after,
)

__all__ = [
    "BreakerConfig",
    "BreakerMetrics",
    "Bulkhead",
    "BulkheadFull",
    "BulkheadMetrics",
    "BulkheadTimeout",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "DecorrelatedJitter",
    "Exponential",
    "FakeClock",
    "FullJitter",
    "LocalBreakerStore",
    "Resilience",
    "ResilienceError",
    "RetryBudget",
    "RetryPolicy",
    "RetryVerdict",
    "RetryableStatus",
    "SystemClock",
    "TierLimits",
    "TieredBulkhead",
    "parse_retry_after",
]
