"""Bulkhead: the concurrency limit holds (measured), queueing vs rejection, queue
timeout, FIFO hand-off, cancellation, tiers and live metrics."""

from __future__ import annotations

import asyncio
import time

import pytest

from edge_kv.origin.resilience import (
    Bulkhead,
    BulkheadFull,
    BulkheadTimeout,
    CircuitBreaker,
    FakeClock,
    Resilience,
    RetryPolicy,
    TieredBulkhead,
    TierLimits,
)


class Meter:
    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.done = 0

    async def work(self, seconds: float = 0.002) -> str:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.running -= 1
        self.done += 1
        return "done"


async def test_limit_5_with_50_callers_queued_never_more_than_5_run() -> None:
    bh = Bulkhead("db", 5, max_queue=45)
    meter = Meter()
    results = await asyncio.gather(*(bh.call(meter.work) for _ in range(50)))
    assert results == ["done"] * 50
    assert meter.peak == 5
    assert bh.metrics.peak_in_use == 5
    m = bh.metrics
    assert (m.in_use, m.queued, m.accepted, m.completed, m.rejected) == (0, 0, 50, 50, 0)


async def test_limit_5_queue_10_rejects_the_rest_with_a_typed_error() -> None:
    bh = Bulkhead("db", 5, max_queue=10)
    gate = asyncio.Event()
    meter = Meter()

    async def held() -> str:
        meter.running += 1
        meter.peak = max(meter.peak, meter.running)
        await gate.wait()
        meter.running -= 1
        return "done"

    async def attempt() -> str:
        try:
            return await bh.call(held)
        except BulkheadFull as exc:
            assert exc.reason == "queue_full" and exc.limit == 5
            return "rejected"

    tasks = [asyncio.create_task(attempt()) for _ in range(50)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert (bh.metrics.in_use, bh.metrics.queued, bh.metrics.rejected_full) == (5, 10, 35)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert results.count("done") == 15 and results.count("rejected") == 35
    assert meter.peak == 5
    assert bh.metrics.in_use == 0 and bh.metrics.completed == 15


async def test_no_queue_means_immediate_rejection() -> None:
    bh = Bulkhead("x", 1)
    async with bh:
        with pytest.raises(BulkheadFull):
            await bh.acquire()
    assert bh.metrics.rejected_full == 1


async def test_queue_timeout() -> None:
    bh = Bulkhead("x", 1, max_queue=5, queue_timeout=0.05)
    await bh.acquire()
    t0 = time.monotonic()
    with pytest.raises(BulkheadTimeout) as info:
        await bh.acquire()
    elapsed = time.monotonic() - t0
    assert 0.04 <= elapsed < 0.5
    assert info.value.reason == "queue_timeout"
    m = bh.metrics
    assert (m.in_use, m.queued, m.rejected_timeout, m.rejected) == (1, 0, 1, 1)
    bh.release()
    async with bh:  # the slot is free again; no leaked waiter
        assert bh.metrics.in_use == 1


async def test_fifo_hand_off_and_cancelled_waiter() -> None:
    bh = Bulkhead("x", 1, max_queue=3)
    order: list[int] = []
    await bh.acquire()

    async def waiter(i: int) -> None:
        async with bh:
            order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert bh.metrics.queued == 3
    tasks[1].cancel()
    await asyncio.sleep(0)
    assert bh.metrics.queued == 2
    bh.release()
    await asyncio.gather(tasks[0], tasks[2])
    assert order == [0, 2]
    assert bh.metrics.in_use == 0 and bh.metrics.queued == 0


async def test_tiers_are_isolated() -> None:
    tiers = TieredBulkhead(
        "api", {"critical": TierLimits(2, max_queue=2), "optional": TierLimits(1)}, default_tier="critical"
    )
    gate = asyncio.Event()

    async def hold() -> None:
        await gate.wait()

    blocker = asyncio.create_task(tiers("optional").call(hold))
    await asyncio.sleep(0)
    with pytest.raises(BulkheadFull):
        await tiers("optional").acquire()  # optional traffic is shed...
    async with tiers("critical"), tiers():  # ...while critical still has its own two slots
        assert tiers.metrics()["critical"].in_use == 2
    gate.set()
    await blocker
    assert tiers.metrics()["optional"].rejected_full == 1
    with pytest.raises(ValueError):
        tiers("bogus")
    with pytest.raises(ValueError):
        TieredBulkhead("api", {"a": TierLimits(1)}, default_tier="b")


async def test_full_bulkhead_is_not_a_dependency_failure_nor_retried() -> None:
    clock = FakeClock()
    bh = Bulkhead("x", 1)
    from edge_kv.origin.resilience import BreakerConfig

    breaker = CircuitBreaker("b", BreakerConfig(window_size=1, minimum_calls=1), clock=clock)
    stack = Resilience(retry=RetryPolicy(max_attempts=5, clock=clock), breaker=breaker, bulkhead=bh)
    calls = 0

    async def dep() -> str:
        nonlocal calls
        calls += 1
        return "ok"

    await bh.acquire()
    with pytest.raises(BulkheadFull):
        await stack.call(dep)
    assert calls == 0 and clock.sleeps == []
    assert breaker.state == "closed" and breaker.metrics.ignored == 1
    bh.release()
    assert await stack.call(dep) == "ok"


def test_validation() -> None:
    for kwargs in (
        {"max_concurrent": 0},
        {"max_concurrent": 1, "max_queue": -1},
        {"max_concurrent": 1, "queue_timeout": 0},
    ):
        with pytest.raises(ValueError):
            Bulkhead("x", **kwargs)


async def test_stress_random_timeouts_and_cancellations_keep_the_limit_and_metrics_consistent() -> None:
    """Races between hand-off, queue timeout and cancellation (rounds: EDGE_KV_STRESS_ROUNDS)."""
    import os
    import random

    rng = random.Random(5)
    for _ in range(int(os.environ.get("EDGE_KV_STRESS_ROUNDS", "3"))):
        bh = Bulkhead("s", 4, max_queue=30, queue_timeout=0.004)
        meter = Meter()

        async def one(bh: Bulkhead = bh, meter: Meter = meter) -> str:
            try:
                return await bh.call(meter.work, rng.choice((0, 0.001, 0.003)))
            except BulkheadFull:
                return "rejected"

        tasks = [asyncio.create_task(one()) for _ in range(200)]
        await asyncio.sleep(0.002)
        for t in rng.sample(tasks, 40):
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        m = bh.metrics
        assert meter.peak <= 4 and m.peak_in_use <= 4
        assert (m.in_use, m.queued) == (0, 0)
        assert m.accepted == m.completed
        assert results.count("done") == meter.done
        assert m.rejected == results.count("rejected")
        async with bh:  # still usable
            pass
