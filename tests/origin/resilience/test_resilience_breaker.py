"""Local circuit breaker: scripted transitions (fake clock), slow calls, time windows,
probe budget under concurrency, outcome classification, stale outcomes, fallbacks."""

from __future__ import annotations

import asyncio

import pytest

from edge_kv.origin.resilience import (
    BreakerConfig,
    CircuitBreaker,
    CircuitOpenError,
    FakeClock,
)
from edge_kv.origin.resilience.errors import BulkheadFull


class Dep:
    """A scripted dependency: each call pops the next outcome ('ok', 'fail', ('slow', s))."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls = 0

    async def ok(self) -> str:
        self.calls += 1
        return "ok"

    async def fail(self) -> str:
        self.calls += 1
        raise ConnectionError("down")

    async def slow(self, seconds: float, fail: bool = False) -> str:
        self.calls += 1
        self.clock.advance(seconds)
        if fail:
            raise TimeoutError("slow and failed")
        return "slow"


def make(cfg: BreakerConfig, clock: FakeClock) -> tuple[CircuitBreaker, list[tuple[str, str]]]:
    changes: list[tuple[str, str]] = []
    b = CircuitBreaker(
        "dep", cfg, clock=clock, on_state_change=lambda _n, old, new: changes.append((old, new))
    )
    return b, changes


async def run(b: CircuitBreaker, fn: object, *args: object) -> str:
    try:
        return await b.call(fn, *args)  # type: ignore[arg-type]
    except CircuitOpenError:
        return "rejected"
    except (ConnectionError, TimeoutError):
        return "failed"


async def test_scripted_failure_sequence_walks_every_transition() -> None:
    clock = FakeClock()
    dep = Dep(clock)
    cfg = BreakerConfig(
        window_size=4, minimum_calls=4, failure_rate_threshold=50, wait_in_open=10, half_open_probes=2
    )
    b, changes = make(cfg, clock)

    assert [await run(b, f) for f in (dep.ok, dep.fail, dep.ok)] == ["ok", "failed", "ok"]
    assert b.state == "closed"  # 1/3 failed, and below minimum_calls anyway
    assert await run(b, dep.fail) == "failed"  # 2/4 = 50% -> open
    assert b.state == "open"

    with pytest.raises(CircuitOpenError) as info:
        await b.call(dep.ok)
    assert info.value.retry_after == pytest.approx(10.0)
    assert dep.calls == 4  # the refused call never reached the dependency

    clock.advance(9.998)
    assert await run(b, dep.ok) == "rejected"
    clock.advance(0.002)
    assert await run(b, dep.ok) == "ok"  # first probe
    assert b.state == "half_open"
    assert await run(b, dep.fail) == "failed"  # second probe: 1/2 failed -> open again
    assert b.state == "open"

    clock.advance(10)
    assert await run(b, dep.ok) == "ok"
    assert await run(b, dep.ok) == "ok"
    assert b.state == "closed"
    # The window was reset on closing: three failures out of four are needed again.
    assert [await run(b, dep.fail) for _ in range(3)] == ["failed"] * 3
    assert b.state == "closed"  # 3 calls < minimum 4
    assert changes == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert b.metrics.transitions[("closed", "open")] == 1
    assert b.metrics.rejected == 2
    assert b.metrics.failures == 6


async def test_slow_calls_open_the_circuit_even_when_they_succeed() -> None:
    clock = FakeClock()
    dep = Dep(clock)
    cfg = BreakerConfig(
        window_size=4,
        minimum_calls=4,
        failure_rate_threshold=100,
        slow_call_duration=1.0,
        slow_call_rate_threshold=50,
        wait_in_open=5,
        half_open_probes=1,
    )
    b, changes = make(cfg, clock)
    assert await run(b, dep.slow, 0.999) == "slow"  # just under the threshold: not slow
    assert await run(b, dep.slow, 1.0) == "slow"  # slow
    assert await run(b, dep.ok) == "ok"
    assert b.state == "closed"
    assert b.metrics.slow == 1
    assert await run(b, dep.slow, 2.5) == "slow"  # 2 slow of 4 = 50% -> open
    assert b.state == "open"
    clock.advance(5)
    assert await run(b, dep.slow, 3.0) == "slow"  # the single probe is slow -> open again
    assert b.state == "open"
    clock.advance(5)
    assert await run(b, dep.ok) == "ok"
    assert b.state == "closed"
    assert changes[:3] == [("closed", "open"), ("open", "half_open"), ("half_open", "open")]


async def test_failure_threshold_is_not_reached_below_minimum_calls() -> None:
    clock = FakeClock()
    dep = Dep(clock)
    b, _ = make(BreakerConfig(window_size=10, minimum_calls=5, failure_rate_threshold=50), clock)
    for _ in range(4):
        await run(b, dep.fail)
    assert b.state == "closed"
    await run(b, dep.fail)
    assert b.state == "open"


async def test_count_window_forgets_old_calls() -> None:
    clock = FakeClock()
    dep = Dep(clock)
    b, _ = make(BreakerConfig(window_size=4, minimum_calls=4, failure_rate_threshold=75), clock)
    for f in (dep.fail, dep.fail, dep.ok, dep.ok, dep.ok, dep.ok, dep.fail, dep.fail):
        await run(b, f)
    assert b.state == "closed"  # never 3 failures among the last 4
    await run(b, dep.fail)  # last four: ok fail fail fail
    assert b.state == "open"


async def test_time_window_counts_only_recent_seconds() -> None:
    clock = FakeClock(start=100.0)
    dep = Dep(clock)
    b, _ = make(
        BreakerConfig(window="time", window_size=10, minimum_calls=3, failure_rate_threshold=60), clock
    )
    await run(b, dep.fail)  # t=100
    clock.advance(5)
    await run(b, dep.fail)  # t=105
    clock.advance(6)  # t=111: the failure of t=100 has left the window
    await run(b, dep.ok)
    assert b.state == "closed"  # 1 fail / 2 calls, below minimum
    await run(b, dep.ok)  # 1 fail / 3 calls = 33%
    assert b.state == "closed"
    await run(b, dep.fail)
    await run(b, dep.fail)  # 3 / 5 = 60%
    assert b.state == "open"


async def test_half_open_admits_exactly_its_probe_budget_under_concurrency() -> None:
    clock = FakeClock()
    cfg = BreakerConfig(window_size=2, minimum_calls=2, wait_in_open=1, half_open_probes=3)
    b, changes = make(cfg, clock)
    await b.force_open()
    clock.advance(1)
    gate = asyncio.Event()
    running = 0

    async def probe() -> str:
        nonlocal running
        running += 1
        await gate.wait()
        return "ok"

    tasks = [asyncio.create_task(run(b, probe)) for _ in range(50)]
    while sum(t.done() for t in tasks) < 47:  # noqa: ASYNC110 - polling task states, no event to wait on
        await asyncio.sleep(0)
    assert running == 3
    assert b.state == "half_open"
    gate.set()
    results = await asyncio.gather(*tasks)
    assert results.count("ok") == 3
    assert results.count("rejected") == 47
    assert b.state == "closed"
    assert changes[-2:] == [("open", "half_open"), ("half_open", "closed")]


async def test_lost_probes_are_replaced_after_half_open_timeout() -> None:
    clock = FakeClock()
    b, _ = make(BreakerConfig(wait_in_open=1, half_open_probes=1, half_open_timeout=2), clock)
    await b.force_open()
    clock.advance(1)
    permit = await b.permit()  # a probe that never reports (its replica died)
    assert permit.allowed
    with pytest.raises(CircuitOpenError):
        await b.permit()
    clock.advance(2)
    dep = Dep(clock)
    assert await run(b, dep.ok) == "ok"  # a fresh probe round
    assert b.state == "closed"
    await b.report(permit, 1, 0.0)  # the lost probe's late failure is stale: ignored
    assert b.state == "closed"


async def test_cancelled_and_ignored_calls_give_the_probe_back() -> None:
    clock = FakeClock()
    b, _ = make(BreakerConfig(wait_in_open=1, half_open_probes=1), clock)
    await b.force_open()
    clock.advance(1)

    async def refused_locally() -> str:
        raise BulkheadFull("x", 1, 0)

    with pytest.raises(BulkheadFull):
        await b.call(refused_locally)
    assert b.state == "half_open" and b.metrics.ignored == 1

    async def hang() -> str:
        await asyncio.sleep(3600)
        return "never"

    task = asyncio.create_task(b.call(hang))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    dep = Dep(clock)
    assert await run(b, dep.ok) == "ok"  # the probe slot came back twice
    assert b.state == "closed"


async def test_exception_classification_is_configurable() -> None:
    clock = FakeClock()

    class NotFound(Exception):
        pass

    cfg = BreakerConfig(window_size=2, minimum_calls=2, failure_rate_threshold=50)
    b = CircuitBreaker(
        "c", cfg, clock=clock, failure_exceptions=(ConnectionError,), ignore_exceptions=(KeyError,)
    )

    async def raise_(exc: BaseException) -> None:
        raise exc

    for exc in (NotFound(), KeyError("k"), NotFound()):
        with pytest.raises(type(exc)):
            await b.call(raise_, exc)
    assert b.state == "closed"
    assert (b.metrics.successes, b.metrics.ignored, b.metrics.failures) == (2, 1, 0)

    b2 = CircuitBreaker("c2", cfg, clock=clock, is_failure=lambda e: isinstance(e, NotFound))
    for _ in range(2):
        with pytest.raises(NotFound):
            await b2.call(raise_, NotFound())
    assert b2.state == "open"


async def test_result_classification_and_guard_mark_failure() -> None:
    clock = FakeClock()
    cfg = BreakerConfig(window_size=2, minimum_calls=2, failure_rate_threshold=100)
    b = CircuitBreaker("r", cfg, clock=clock, is_failure_result=lambda r: r == 503)

    async def status(code: int) -> int:
        return code

    assert await b.call(status, 503) == 503
    async with b.guard() as g:
        g.mark_failure()
    assert b.state == "open"


async def test_outcome_of_a_call_admitted_before_opening_is_ignored() -> None:
    clock = FakeClock()
    b, _ = make(BreakerConfig(window_size=2, minimum_calls=2, wait_in_open=1, half_open_probes=1), clock)
    early = await b.permit()  # admitted while closed, still running
    await b.force_open()
    clock.advance(1)
    probe = await b.permit()  # half-open probe
    await b.report(early, 0, 0.0)  # late success from the old generation: must not close the circuit
    assert b.state == "half_open"
    await b.report(probe, 0, 0.0)
    assert b.state == "closed"


async def test_fallbacks_cached_alternate_default() -> None:
    clock = FakeClock()
    b, _ = make(BreakerConfig(window_size=1, minimum_calls=1, wait_in_open=60), clock)
    healthy = True

    async def alternate(key: str) -> str:
        return f"alt:{key}"

    @b.protect(use_cached=True, fallback=alternate)
    async def fetch(key: str) -> str:
        if not healthy:
            raise ConnectionError
        return f"live:{key}"

    @b.protect(default="dflt")
    async def other() -> str:
        return "live"

    assert await fetch("a") == "live:a"
    healthy = False
    with pytest.raises(ConnectionError):  # failures themselves are not hidden by default
        await fetch("a")
    assert b.state == "open"
    assert await fetch("a") == "live:a"  # cached value
    assert await fetch("b") == "alt:b"  # nothing cached: alternate callable
    assert await other() == "dflt"
    assert b.metrics.fallbacks == 3

    @b.protect()
    async def bare() -> str:
        return "x"

    with pytest.raises(CircuitOpenError):
        await bare()


async def test_decorator_and_reset() -> None:
    clock = FakeClock()
    b, changes = make(BreakerConfig(window_size=1, minimum_calls=1), clock)

    @b
    async def boom() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        await boom()
    with pytest.raises(CircuitOpenError):
        await boom()
    await b.reset()
    assert b.state == "closed"
    assert changes == [("closed", "open"), ("open", "closed")]


def test_name_validation() -> None:
    # BreakerConfig's own validation is tested with the state machine (tests/core/test_breaker.py).
    with pytest.raises(ValueError):
        CircuitBreaker("", BreakerConfig())
