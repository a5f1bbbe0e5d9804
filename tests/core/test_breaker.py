"""The circuit-breaker state machine (edge_kv.core.breaker) driven directly: pure
functions over a dict, integer milliseconds, no clock and no I/O.

Stdlib + pytest + hypothesis only: runs on CPython and again inside Pyodide. The origin's
CircuitBreaker (tests/origin/resilience) and the Redis mirror (breaker.lua) are tested
on top of this."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_kv.core import breaker as policy
from edge_kv.core.breaker import (
    CLOSED,
    FAILURE,
    HALF_OPEN,
    IGNORED,
    OPEN,
    SUCCESS,
    BreakerConfig,
    BreakerDecision,
)
from edge_kv.core.errors import InvalidInput


def test_config_validation() -> None:
    # Moved from tests/origin/resilience/test_resilience_breaker.py (BreakerConfig is core now).
    for bad in (
        {"window": "sliding"},
        {"window_size": 0},
        {"minimum_calls": -1},
        {"failure_rate_threshold": 0},
        {"failure_rate_threshold": 101},
        {"slow_call_duration": 0},
        {"wait_in_open": -1},
        {"half_open_probes": 0},
        {"window": "time", "window_size": 7200},
    ):
        with pytest.raises(ValueError):
            BreakerConfig(**bad)


def test_config_errors_are_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        BreakerConfig(window_size=True)
    with pytest.raises(InvalidInput):
        BreakerConfig(failure_rate_threshold=float("nan"))
    with pytest.raises(InvalidInput):
        BreakerConfig(window="count", window_size=10_001)


def call(cfg: BreakerConfig, st_: policy.State, now: int, kind: int, duration: int = 0) -> BreakerDecision:
    permit = policy.acquire(cfg, st_, now)
    assert permit.allowed
    return policy.record(cfg, st_, now, permit.gen, kind, duration)


def test_every_transition_in_integer_milliseconds() -> None:
    cfg = BreakerConfig(
        window_size=4, minimum_calls=4, failure_rate_threshold=50, wait_in_open=10, half_open_probes=2
    )
    s: policy.State = {}
    for kind in (SUCCESS, FAILURE, SUCCESS):
        assert call(cfg, s, 0, kind).changed == -1
    opened = call(cfg, s, 0, FAILURE)  # 2 of 4 failed = 50 %
    assert (opened.state, opened.changed) == (OPEN, CLOSED)

    refused = policy.acquire(cfg, s, 9_998)
    assert refused == BreakerDecision(False, opened.gen, OPEN, 2, -1)  # 2 ms left of the 10 s

    probe1 = policy.acquire(cfg, s, 10_000)
    assert (probe1.allowed, probe1.state, probe1.changed) == (True, HALF_OPEN, OPEN)
    probe2 = policy.acquire(cfg, s, 10_000)
    assert probe2.allowed and probe2.changed == -1
    assert not policy.acquire(cfg, s, 10_000).allowed  # both probes are out
    assert policy.record(cfg, s, 10_001, probe1.gen, SUCCESS, 0).changed == -1
    closed = policy.record(cfg, s, 10_002, probe2.gen, SUCCESS, 0)
    assert (closed.state, closed.changed) == (CLOSED, HALF_OPEN)
    assert s == {"st": CLOSED, "gen": closed.gen, "since": 10_002}  # the window starts empty


def test_outcomes_from_an_older_generation_are_ignored() -> None:
    cfg = BreakerConfig(window_size=2, minimum_calls=2, wait_in_open=1, half_open_probes=1)
    s: policy.State = {}
    early = policy.acquire(cfg, s, 0)
    policy.force(s, OPEN, 0)
    probe = policy.acquire(cfg, s, 1_000)
    assert probe.state == HALF_OPEN and probe.gen != early.gen
    assert policy.record(cfg, s, 1_000, early.gen, SUCCESS, 0).state == HALF_OPEN
    assert policy.record(cfg, s, 1_000, probe.gen, SUCCESS, 0).state == CLOSED


def test_ignored_outcome_gives_the_probe_back_and_lost_probes_are_replaced() -> None:
    cfg = BreakerConfig(wait_in_open=1, half_open_probes=1, half_open_timeout=2)
    s: policy.State = {}
    policy.force(s, OPEN, 0)
    probe = policy.acquire(cfg, s, 1_000)
    policy.record(cfg, s, 1_000, probe.gen, IGNORED, 0)
    lost = policy.acquire(cfg, s, 1_000)  # the slot came back
    assert lost.allowed
    assert policy.acquire(cfg, s, 2_999).retry_after_ms == 1
    fresh = policy.acquire(cfg, s, 3_000)  # half_open_timeout passed: a fresh round
    assert fresh.allowed and fresh.gen == lost.gen + 1


def test_slow_calls_and_time_window() -> None:
    cfg = BreakerConfig(
        window="time",
        window_size=10,
        minimum_calls=2,
        failure_rate_threshold=100,
        slow_call_duration=1.0,
        slow_call_rate_threshold=50,
    )
    s: policy.State = {}
    assert call(cfg, s, 100_000, SUCCESS, 999).state == CLOSED
    assert call(cfg, s, 111_000, SUCCESS, 1_000).state == CLOSED  # the first call left the window
    assert call(cfg, s, 111_500, SUCCESS, 0).state == OPEN  # 1 slow of 2 = 50 %


def test_force_reports_the_previous_state() -> None:
    s: policy.State = {}
    assert policy.force(s, OPEN, 5) == BreakerDecision(False, 1, OPEN, 0, CLOSED)
    assert policy.force(s, CLOSED, 6) == BreakerDecision(True, 2, CLOSED, 0, OPEN)


@given(
    st.integers(min_value=1, max_value=20),
    st.lists(st.sampled_from((SUCCESS, FAILURE)), max_size=60),
)
def test_count_window_opens_exactly_after_n_consecutive_failures(n: int, outcomes: list[int]) -> None:
    """The quick-start configuration (window = minimum = n, 100 %): OPEN iff the last n
    outcomes recorded while closed were all failures."""
    cfg = BreakerConfig(window="count", window_size=n, minimum_calls=n, failure_rate_threshold=100)
    s: policy.State = {}
    history: list[int] = []
    for kind in outcomes:
        decision = call(cfg, s, 0, kind)
        history.append(kind)
        tripped = len(history) >= n and all(k == FAILURE for k in history[-n:])
        assert (decision.state == OPEN) == tripped
        if tripped:
            break


@given(
    st.integers(min_value=1, max_value=8),
    st.integers(min_value=1, max_value=8),
    st.sampled_from([20.0, 50.0, 100.0]),
    st.sampled_from([None, 0.05]),
    st.lists(
        st.tuples(
            st.sampled_from((SUCCESS, FAILURE)),
            st.sampled_from((0, 10, 60)),
            st.sampled_from((0, 1, 40, 2000)),
            st.booleans(),
        ),
        max_size=80,
    ),
)
def test_record_closed_count_is_record_when_it_applies(
    size: int, minimum: int, rate: float, slow_s: float | None, ops: list[tuple[int, int, int, bool]]
) -> None:
    """The fast path (record_closed_count) changes the state exactly as record does when it
    accepts an outcome, and changes nothing when it declines (record then decides)."""
    cfg = BreakerConfig(
        window_size=size,
        minimum_calls=minimum,
        failure_rate_threshold=rate,
        slow_call_duration=slow_s,
        wait_in_open=1.0,
        half_open_probes=2,
    )
    ref: policy.State = {}
    fast: policy.State = {}
    now = 0
    for kind, duration, advance, stale in ops:
        now += advance
        pa, pb = policy.acquire(cfg, ref, now), policy.acquire(cfg, fast, now)
        assert pa == pb
        if not pa.allowed:
            continue
        gen = pa.gen - 1 if stale else pa.gen
        expected = policy.record(cfg, ref, now, gen, kind, duration)
        slow = 1 if cfg.slow_ms > 0 and duration >= cfg.slow_ms else 0
        before = dict(fast)
        if policy.record_closed_count(cfg, fast, gen, kind, slow):
            assert expected == BreakerDecision(False, gen, CLOSED, 0, -1)
        else:
            assert fast == before
            assert policy.record(cfg, fast, now, gen, kind, duration) == expected
        assert fast == ref
