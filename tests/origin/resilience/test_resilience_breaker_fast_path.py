"""Differential test of CircuitBreaker.call's fast path (CLOSED, local store, count
window): random sequences of successes, failures, slow calls, ignored errors, failure
results and clock advances run through a breaker on the fast path and through one forced
onto the general path must give the same answers, states, metrics and transitions."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_kv.core import breaker as policy
from edge_kv.origin.resilience import BreakerConfig, CircuitBreaker, CircuitOpenError, FakeClock
from edge_kv.origin.resilience.errors import BulkheadFull

OPS = ("ok", "fail", "slow", "slow_fail", "ignored", "bad_result", "advance")


@dataclass
class Run:
    breaker: CircuitBreaker
    clock: FakeClock
    changes: list[tuple[str, str]]
    answers: list[object]


def make(cfg: BreakerConfig, fast: bool) -> Run:
    clock = FakeClock()
    changes: list[tuple[str, str]] = []
    b = CircuitBreaker(
        "dep",
        cfg,
        clock=clock,
        is_failure_result=lambda r: r == "bad",
        on_state_change=lambda _n, old, new: changes.append((old, new)),
    )
    assert b._fast is not None  # a local store and a count window: the fast path applies
    if not fast:
        b._fast = None
    return Run(b, clock, changes, [])


async def step(run: Run, op: str, seconds: float) -> None:
    clock = run.clock

    async def dep() -> str:
        if op in ("slow", "slow_fail"):
            clock.advance(seconds)
        if op in ("fail", "slow_fail"):
            raise ConnectionError("down")
        if op == "ignored":
            raise BulkheadFull("bh", 1, 0)
        return "bad" if op == "bad_result" else "ok"

    if op == "advance":
        clock.advance(seconds)
        return
    try:
        run.answers.append(await run.breaker.call(dep))
    except CircuitOpenError as exc:
        run.answers.append(("open", exc.state, exc.retry_after))
    except (ConnectionError, BulkheadFull) as exc:
        run.answers.append(type(exc).__name__)


configs = st.builds(
    BreakerConfig,
    window=st.just("count"),
    window_size=st.integers(1, 8),
    minimum_calls=st.integers(1, 8),
    failure_rate_threshold=st.sampled_from([20.0, 33.4, 50.0, 100.0]),
    slow_call_duration=st.sampled_from([None, 0.05, 0.2]),
    slow_call_rate_threshold=st.sampled_from([50.0, 100.0]),
    wait_in_open=st.sampled_from([0.1, 1.0]),
    half_open_probes=st.integers(1, 3),
)
ops = st.lists(
    st.tuples(st.sampled_from(OPS), st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.3, 1.5])), max_size=80
)


@settings(max_examples=300, deadline=None)
@given(configs, ops)
def test_fast_path_matches_general_path(cfg: BreakerConfig, sequence: list[tuple[str, float]]) -> None:
    fast, slow = make(cfg, True), make(cfg, False)

    async def drive() -> None:
        for op, seconds in sequence:
            for run in (fast, slow):
                await step(run, op, seconds)
            assert fast.answers == slow.answers
            assert fast.breaker.store.states == slow.breaker.store.states  # type: ignore[attr-defined]
            assert fast.breaker.metrics == slow.breaker.metrics
            assert fast.changes == slow.changes
            assert fast.breaker.state == slow.breaker.state

    asyncio.run(drive())


async def test_fast_path_is_taken_for_closed_successes(monkeypatch: pytest.MonkeyPatch) -> None:
    """While CLOSED the fast path neither asks policy.acquire nor calls policy.record (so
    the differential test above compares two different code paths)."""
    calls = {"acquire": 0, "record": 0}
    acquire, record = policy.acquire, policy.record

    def counting_acquire(*a: object, **k: object) -> policy.BreakerDecision:
        calls["acquire"] += 1
        return acquire(*a, **k)  # type: ignore[arg-type]

    def counting_record(*a: object, **k: object) -> policy.BreakerDecision:
        calls["record"] += 1
        return record(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(policy, "acquire", counting_acquire)
    monkeypatch.setattr(policy, "record", counting_record)
    run = make(BreakerConfig(window_size=4, minimum_calls=4, failure_rate_threshold=100), True)
    for _ in range(10):
        await step(run, "ok", 0)
    assert calls == {"acquire": 0, "record": 0}
    assert run.breaker.metrics.successes == 10 and run.breaker.metrics.permitted == 10
    for _ in range(4):
        await step(run, "fail", 0)  # the 4th trips: the general path records the transition
    assert run.breaker.state == "open" and calls == {"acquire": 0, "record": 1}
    run.breaker._fast = None
    await step(run, "ok", 0)
    assert calls["acquire"] == 1
