"""Origin resilience: circuit breaker (local or Redis-shared), retry with jittered
backoff and a retry budget, bulkheads, and an httpx transport combining them.

Composition order is ``retry(breaker(bulkhead(call)))`` (see :mod:`.compose`).
``breaker_redis`` and ``transport`` import redis / httpx and are not imported here.
The pure parts live in :mod:`edge_kv.core`: the breaker state machine
(:mod:`edge_kv.core.breaker`), backoff and ``Retry-After`` (:mod:`edge_kv.core.backoff`)
and the clocks (:mod:`edge_kv.core.clock`); their public names are re-exported here.

Quick start::

    @circuit_breaker(failure_threshold=5, recovery_timeout=30)
    @retry(max_attempts=3, base_delay=1.0)
    async def call_external_api(): ...
"""

from edge_kv.core.backoff import (
    DecorrelatedJitter,
    Exponential,
    FullJitter,
    RetryVerdict,
    classify_status,
    parse_retry_after,
)
from edge_kv.core.breaker import BreakerConfig, BreakerDecision
from edge_kv.core.clock import Clock, FakeClock, SystemClock
from edge_kv.origin.resilience.breaker import (
    BreakerMetrics,
    BreakerProtected,
    CircuitBreaker,
    LocalBreakerStore,
    circuit_breaker,
)
from edge_kv.origin.resilience.budget import RetryBudget
from edge_kv.origin.resilience.bulkhead import Bulkhead, BulkheadMetrics, TieredBulkhead, TierLimits
from edge_kv.origin.resilience.compose import Resilience
from edge_kv.origin.resilience.errors import BulkheadFull, BulkheadTimeout, CircuitOpenError, ResilienceError
from edge_kv.origin.resilience.retry_policy import RetryableStatus, RetryPolicy, default_classifier, retry

__all__ = [
    "BreakerConfig",
    "BreakerDecision",
    "BreakerMetrics",
    "BreakerProtected",
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
    "circuit_breaker",
    "classify_status",
    "default_classifier",
    "parse_retry_after",
    "retry",
]
