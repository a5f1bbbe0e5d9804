"""Retry: classification (never 401 / open breaker), attempt and time bounds, jitter
bounds, Retry-After (seconds and HTTP-date), and the retry budget cap — on a fake clock."""

from __future__ import annotations

import email.utils
import random

import pytest

from edge_kv.origin.resilience import (
    BreakerConfig,
    CircuitBreaker,
    CircuitOpenError,
    DecorrelatedJitter,
    Exponential,
    FakeClock,
    FullJitter,
    Resilience,
    RetryableStatus,
    RetryBudget,
    RetryPolicy,
)
from edge_kv.origin.resilience.errors import BulkheadFull


class Flaky:
    """Raises the scripted exceptions, then returns 'ok'."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_retries_transient_errors_until_success() -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=4, clock=clock, rng=random.Random(1))
    dep = Flaky(ConnectionError(), TimeoutError(), RetryableStatus(503))
    assert await policy.call(dep) == "ok"
    assert dep.calls == 4
    assert len(clock.sleeps) == 3
    assert policy.metrics.retries == 3 and policy.metrics.succeeded_after_retry == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 500])
async def test_never_retries_client_errors(status: int) -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=5, clock=clock)
    dep = Flaky(RetryableStatus(status), RetryableStatus(status))
    with pytest.raises(RetryableStatus):
        await policy.call(dep)
    assert dep.calls == 1 and clock.sleeps == []
    assert policy.metrics.not_retryable == 1


@pytest.mark.parametrize(
    "exc", [ValueError("bad"), CircuitOpenError("b", "open", 3.0), BulkheadFull("x", 1, 0)]
)
async def test_never_retries_unknown_errors_open_breaker_or_full_bulkhead(exc: Exception) -> None:
    clock = FakeClock()
    dep = Flaky(exc)
    with pytest.raises(type(exc)):
        await RetryPolicy(max_attempts=5, clock=clock).call(dep)
    assert dep.calls == 1 and clock.sleeps == []


async def test_retry_around_breaker_gives_up_at_once_when_it_opens() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "dep", BreakerConfig(window_size=2, minimum_calls=2, wait_in_open=30), clock=clock
    )
    retry = RetryPolicy(max_attempts=10, clock=clock, backoff=Exponential(0.1, 1))
    dep = Flaky(*[ConnectionError() for _ in range(20)])
    stack = Resilience(retry=retry, breaker=breaker)
    with pytest.raises(CircuitOpenError):
        await stack.call(dep)
    assert dep.calls == 2  # two failures opened the breaker; the third attempt was refused locally
    assert len(clock.sleeps) == 2
    with pytest.raises(CircuitOpenError):
        await stack.call(dep)
    assert dep.calls == 2 and len(clock.sleeps) == 2  # no sleeping, no calling through an open breaker


async def test_attempts_and_full_jitter_delays_stay_in_bounds() -> None:
    for seed in range(20):
        clock = FakeClock()
        policy = RetryPolicy(
            max_attempts=6,
            max_total=None,
            backoff=FullJitter(base=0.1, cap=1.0),
            clock=clock,
            rng=random.Random(seed),
        )
        dep = Flaky(*[ConnectionError() for _ in range(10)])
        with pytest.raises(ConnectionError):
            await policy.call(dep)
        assert dep.calls == 6
        assert len(clock.sleeps) == 5
        for i, d in enumerate(clock.sleeps):
            assert 0 <= d <= min(1.0, 0.1 * 2**i)
        assert policy.metrics.gave_up_attempts == 1


async def test_decorrelated_jitter_bounds() -> None:
    clock = FakeClock()
    policy = RetryPolicy(
        max_attempts=30,
        max_total=None,
        backoff=DecorrelatedJitter(base=0.05, cap=2.0),
        clock=clock,
        rng=random.Random(7),
    )
    with pytest.raises(ConnectionError):
        await policy.call(Flaky(*[ConnectionError() for _ in range(40)]))
    prev = 0.05
    for d in clock.sleeps:
        assert 0.05 <= d <= min(2.0, 3 * prev) + 1e-12
        prev = d
    assert max(clock.sleeps) <= 2.0


async def test_max_total_time_is_never_exceeded() -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=100, max_total=1.0, backoff=Exponential(base=0.3, cap=10), clock=clock)
    dep = Flaky(*[TimeoutError() for _ in range(100)])
    with pytest.raises(TimeoutError):
        await policy.call(dep)
    assert clock.sleeps == pytest.approx([0.3, 0.6])  # 0.3 + 0.6 + 1.2 would pass 1.0 s
    assert dep.calls == 3
    assert policy.metrics.gave_up_deadline == 1


async def test_retry_after_seconds_is_honoured() -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=3, backoff=FullJitter(0.01, 0.1), clock=clock)
    dep = Flaky(RetryableStatus(429, {"Retry-After": "7"}))
    assert await policy.call(dep) == "ok"
    assert clock.sleeps == [7.0]


async def test_retry_after_http_date_is_honoured() -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=3, backoff=FullJitter(0.01, 0.1), clock=clock)
    date = email.utils.formatdate(clock.time() + 12, usegmt=True)
    dep = Flaky(RetryableStatus(503, {"retry-after": date}))
    assert await policy.call(dep) == "ok"
    assert 11.0 <= clock.sleeps[0] <= 12.0


async def test_retry_after_beyond_limit_or_deadline_gives_up_without_sleeping() -> None:
    clock = FakeClock()
    dep = Flaky(RetryableStatus(503, {"Retry-After": "120"}))
    with pytest.raises(RetryableStatus):
        await RetryPolicy(max_retry_after=60, clock=clock).call(dep)
    dep = Flaky(RetryableStatus(503, {"Retry-After": "20"}))
    with pytest.raises(RetryableStatus):
        await RetryPolicy(max_total=10, clock=clock).call(dep)
    assert clock.sleeps == []


async def test_result_based_retry_returns_last_result_and_discards_the_others() -> None:
    clock = FakeClock()
    discarded: list[int] = []

    async def discard(r: object) -> None:
        discarded.append(r)  # type: ignore[arg-type]

    from edge_kv.core.backoff import classify_status

    policy = RetryPolicy(
        max_attempts=3,
        clock=clock,
        discard_result=discard,
        classify_result=lambda status, now: classify_status(status, None, now=now),
    )
    statuses = iter([503, 502, 504])

    async def call() -> int:
        return next(statuses)

    assert await policy.call(call) == 504
    assert discarded == [503, 502]


async def test_budget_caps_retries_under_an_always_failing_dependency() -> None:
    clock = FakeClock()
    budget = RetryBudget(0.1, initial_retries=10, clock=clock)
    policy = RetryPolicy(
        max_attempts=3, max_total=None, budget=budget, backoff=Exponential(0.001, 0.001), clock=clock
    )
    calls = 0

    async def always_fails() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError

    for _ in range(1000):
        with pytest.raises(ConnectionError):
            await policy.call(always_fails)
    retries = calls - 1000
    assert retries == policy.metrics.retries
    assert 100 <= retries <= 0.1 * 1000 + 10
    assert policy.metrics.gave_up_budget > 0
    # Without the budget the same run would have made 2000 retries.


async def test_budget_floor_allows_retries_at_low_traffic() -> None:
    clock = FakeClock()
    budget = RetryBudget(0.1, initial_retries=0, min_retries_per_second=1, clock=clock)
    assert budget.try_withdraw()  # the floor bucket starts full (capacity 1)
    assert not budget.try_withdraw()
    clock.advance(1.0)
    assert budget.try_withdraw()
    for _ in range(10):
        budget.deposit()
    assert budget.available == 1


def test_validation() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(max_total=0)
    with pytest.raises(ValueError):
        RetryBudget(0)
    with pytest.raises(ValueError):
        RetryBudget(1.5)
    with pytest.raises(ValueError):
        RetryBudget(0.1, initial_retries=5, max_retries_banked=2)


async def test_decorator_form() -> None:
    clock = FakeClock()
    dep = Flaky(ConnectionError())

    @RetryPolicy(clock=clock)
    async def fetch() -> str:
        return await dep()

    assert await fetch() == "ok"
    assert dep.calls == 2
