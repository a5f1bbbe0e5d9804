"""Every origin error class derives from the root in edge_kv.core.errors, with its own
``code`` and a ``status`` hint, and keeps the bases callers already catch."""

from __future__ import annotations

import pytest

from edge_kv.core.errors import Conflict, EdgeKvError, LockError, Unavailable, error_from_code
from edge_kv.origin.idempotency import (
    FingerprintMismatch,
    IdempotencyError,
    InFlight,
    StoreUnavailable,
)
from edge_kv.origin.locks import LockAcquireTimeout, LockNotOwned, LockUnavailable, StaleFencingToken
from edge_kv.origin.ratelimit import RateLimiterUnavailable
from edge_kv.origin.resilience import BulkheadFull, BulkheadTimeout, CircuitOpenError, ResilienceError

CASES: list[tuple[EdgeKvError, int, str, tuple[type[BaseException], ...]]] = [
    (CircuitOpenError("payments", "open", 3.0), 503, "circuit_open", (ResilienceError, Unavailable)),
    (BulkheadFull("db", 5, 0), 503, "bulkhead_full", (ResilienceError, Unavailable)),
    (BulkheadTimeout("db", 5, 3), 503, "bulkhead_timeout", (BulkheadFull, ResilienceError, Unavailable)),
    (FingerprintMismatch("reused"), 422, "idempotency_key_reused", (IdempotencyError,)),
    (InFlight("busy", 2), 409, "idempotency_in_flight", (IdempotencyError, Conflict)),
    (StoreUnavailable("down"), 503, "idempotency_store_unavailable", (IdempotencyError, Unavailable)),
    (RateLimiterUnavailable("down"), 503, "rate_limiter_unavailable", (Unavailable, RuntimeError)),
    (LockUnavailable("down"), 503, "lock_unavailable", (LockError, Unavailable)),
    (LockAcquireTimeout("held"), 409, "lock_acquire_timeout", (LockError,)),
    (LockNotOwned("not yours"), 409, "lock_not_owned", (LockError,)),
    (StaleFencingToken("r", 1, 2), 409, "stale_fencing_token", (LockError,)),
]


@pytest.mark.parametrize(("error", "status", "code", "bases"), CASES, ids=[c[2] for c in CASES])
def test_origin_errors_have_the_root_a_status_and_a_code(
    error: EdgeKvError, status: int, code: str, bases: tuple[type[BaseException], ...]
) -> None:
    assert isinstance(error, EdgeKvError)
    assert (error.status, error.code) == (status, code)
    assert type(error).__dict__.get("code") == code  # its own code, not an inherited one
    for base in bases:
        assert isinstance(error, base)
    assert error.to_json() == {"code": code, "status": status, "detail": str(error)}


def test_codes_are_unique_and_travel() -> None:
    codes = [c[2] for c in CASES]
    assert len(set(codes)) == len(codes)
    rebuilt = error_from_code("idempotency_store_unavailable", "pg down")
    assert type(rebuilt) is StoreUnavailable and str(rebuilt) == "pg down"
    assert type(error_from_code("rate_limiter_unavailable", "x")) is RateLimiterUnavailable


def test_error_attributes_are_kept() -> None:
    err = CircuitOpenError("payments", "half_open", 1.5)
    assert (err.name, err.state, err.retry_after) == ("payments", "half_open", 1.5)
    assert str(err) == "circuit 'payments' is half_open; retry after 1.500s"
    full = BulkheadTimeout("db", 5, 3)
    assert (full.name, full.limit, full.queued, full.reason) == ("db", 5, 3, "queue_timeout")
    assert InFlight("busy", 4).retry_after_s == 4
