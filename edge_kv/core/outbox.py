"""Delivery rules of a transactional outbox: what an attempt's outcome means, and what
happens to the entry next.

Pure and stdlib only (runs on CPython and inside Pyodide). The edge outbox
(:mod:`edge_kv.edge.outbox`) stores entries and makes the HTTP calls; this module decides:

* :func:`classify_delivery` maps an HTTP status (or ``None`` for no answer: connection
  refused, timeout) to :data:`DELIVERED` (2xx), :data:`REJECTED` (the origin refuses the
  event itself: 400, 405, 410, 413, 414, 415, 422; retrying cannot help) or
  :data:`RETRY` (everything else: 5xx, 408, 425, 429, 401/403/404 — a key not yet
  rotated in, a route not yet deployed — and any other status).
* :meth:`DeliveryPolicy.after_failure` gives the next step of an entry that failed an
  attempt: retry at a time (backoff from :mod:`edge_kv.core.backoff`, never sooner than a
  ``Retry-After`` the origin sent, capped) or dead-letter (a rejection, or the
  ``max_attempts``-th failed attempt).

Order is the caller's business: an outbox that delivers per object in order must not
try entry *n+1* while entry *n* is waiting for its retry.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from edge_kv.core.backoff import Backoff, FullJitter
from edge_kv.core.errors import InvalidInput

__all__ = [
    "DEAD_LETTER",
    "DELIVERED",
    "REJECTED",
    "REJECTING_STATUSES",
    "RETRY",
    "DeliveryPolicy",
    "NextStep",
    "classify_delivery",
]

DELIVERED = "delivered"
RETRY = "retry"
REJECTED = "rejected"
DEAD_LETTER = "dead_letter"

#: Statuses by which an origin says "this event is wrong", not "not now".
REJECTING_STATUSES = frozenset({400, 405, 410, 413, 414, 415, 422})


def classify_delivery(status: int | None) -> str:
    """:data:`DELIVERED`, :data:`REJECTED` or :data:`RETRY` for an attempt's HTTP status
    (``None``: no answer at all)."""
    if status is None:
        return RETRY
    if isinstance(status, bool) or not isinstance(status, int):
        raise InvalidInput(f"status must be an int or None, got {status!r}")
    if 200 <= status <= 299:
        return DELIVERED
    if status in REJECTING_STATUSES:
        return REJECTED
    return RETRY


@dataclass(frozen=True)
class NextStep:
    """What to do with an entry after a failed attempt: ``action`` is :data:`RETRY`
    (again at ``at_ms``) or :data:`DEAD_LETTER`; ``attempts`` counts the attempts made."""

    action: str
    attempts: int
    at_ms: int = 0


@dataclass(frozen=True)
class DeliveryPolicy:
    """``max_attempts`` attempts per entry (the last failure dead-letters it);
    ``backoff`` gives the wait before retry *k* (seconds), at least ``min_delay_ms``;
    a ``Retry-After`` longer than that is honoured up to ``max_retry_after_ms``."""

    max_attempts: int = 10
    backoff: Backoff = field(default_factory=lambda: FullJitter(base=1.0, cap=300.0))
    min_delay_ms: int = 100
    max_retry_after_ms: int = 3_600_000

    def __post_init__(self) -> None:
        for name, lo in (("max_attempts", 1), ("min_delay_ms", 0), ("max_retry_after_ms", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise InvalidInput(f"{name} must be an integer >= {lo}, got {value!r}")
        if not callable(getattr(self.backoff, "delay", None)):
            raise InvalidInput("backoff must have a delay(retry, previous, rng) method")

    def delay_ms(self, attempts: int, rng: random.Random, retry_after_s: float | None = None) -> int:
        """The wait before the next attempt after ``attempts`` failed ones."""
        wait = int(self.backoff.delay(attempts, 0.0, rng) * 1000)
        wait = max(self.min_delay_ms, wait)
        if retry_after_s is not None and retry_after_s > 0:
            wait = max(wait, min(self.max_retry_after_ms, int(retry_after_s * 1000)))
        return wait

    def after_failure(
        self,
        attempts_before: int,
        outcome: str,
        now_ms: int,
        rng: random.Random,
        retry_after_s: float | None = None,
    ) -> NextStep:
        """The step after one more failed attempt (``outcome`` :data:`RETRY` or
        :data:`REJECTED`) of an entry that had failed ``attempts_before`` times."""
        if outcome not in (RETRY, REJECTED):
            raise InvalidInput(f"outcome must be {RETRY!r} or {REJECTED!r}, got {outcome!r}")
        if isinstance(attempts_before, bool) or not isinstance(attempts_before, int) or attempts_before < 0:
            raise InvalidInput(f"attempts_before must be an integer >= 0, got {attempts_before!r}")
        attempts = attempts_before + 1
        if outcome == REJECTED or attempts >= self.max_attempts:
            return NextStep(DEAD_LETTER, attempts)
        return NextStep(RETRY, attempts, now_ms + self.delay_ms(attempts, rng, retry_after_s))
