"""Typed errors raised by the resilience components.

All derive from :class:`ResilienceError`, itself an :class:`edge_kv.core.errors.EdgeKvError`
(a ``status`` hint and a stable ``code``). They describe a *local* decision (this process
refused to call the dependency), so the default retry classifier never retries them and
the default breaker classifier never counts them as dependency failures. An open circuit
and a full bulkhead are also :class:`~edge_kv.core.errors.Unavailable` (503): ``except
Unavailable`` treats them like any other backend that cannot answer now.
"""

from __future__ import annotations

from edge_kv.core.errors import EdgeKvError, Unavailable

__all__ = ["BulkheadFull", "BulkheadTimeout", "CircuitOpenError", "ResilienceError"]


class ResilienceError(EdgeKvError):
    """Base class: the call was refused before it reached the dependency."""

    status = 503
    code = "resilience_refused"


class CircuitOpenError(ResilienceError, Unavailable):
    """The circuit breaker refused the call (OPEN, or HALF_OPEN with every probe taken).

    ``retry_after`` is the number of seconds after which the breaker may admit a probe
    (0.0 when unknown, e.g. while other probes are still out).
    """

    status = 503
    code = "circuit_open"

    def __init__(self, name: str, state: str, retry_after: float) -> None:
        super().__init__(f"circuit {name!r} is {state}; retry after {retry_after:.3f}s")
        self.name = name
        self.state = state
        self.retry_after = retry_after


class BulkheadFull(ResilienceError, Unavailable):
    """The bulkhead compartment is at its limit and its queue is full (or disabled)."""

    status = 503
    code = "bulkhead_full"
    reason = "queue_full"

    def __init__(self, name: str, limit: int, queued: int) -> None:
        super().__init__(f"bulkhead {name!r} full: {limit} running, {queued} queued ({self.reason})")
        self.name = name
        self.limit = limit
        self.queued = queued


class BulkheadTimeout(BulkheadFull):
    """The caller waited in the bulkhead queue longer than the queue timeout."""

    code = "bulkhead_timeout"
    reason = "queue_timeout"
