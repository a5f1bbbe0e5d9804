"""The rate-limit algorithms of edge_kv.core (edge-safe: runs in Pyodide too).

Behaviour on hand-checked sequences, then properties over random sequences: refusals
never change state, ``retry_after`` is exact (admitted at that instant, refused one
tick before), ``reset_after`` is exact (full quota then, not one tick before), and the
admission history never exceeds what the algorithm promises.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_kv.core.decision import Decision
from edge_kv.core.ratelimit import (
    CounterState,
    FixedWindow,
    Policy,
    SlidingLog,
    SlidingWindowCounter,
    TokenBucket,
    WindowState,
    decide_tiers,
)
from edge_kv.core.ratelimit_spec import policy_from_spec, policy_to_spec

S = 1_000_000
T0 = 1_760_000_000_000_000


def initial(policy: Policy) -> Any:
    return {TokenBucket: 0, SlidingLog: [], SlidingWindowCounter: CounterState(), FixedWindow: WindowState()}[
        type(policy)
    ]


def run(policy: Policy, steps: list[tuple[int, int]]) -> list[Decision]:
    state = initial(policy)
    out = []
    for now, cost in steps:
        d, state = policy.decide(state, now, cost)
        out.append(d)
    return out


# --- hand-checked behaviour ------------------------------------------------------------


def test_token_bucket_burst_then_steady_refill() -> None:
    tb = TokenBucket(3, 2, name="b")  # one token per 500 ms
    ds = run(tb, [(T0, 1)] * 4 + [(T0 + 499_999, 1), (T0 + 500_000, 1)])
    assert [d.allowed for d in ds] == [True, True, True, False, False, True]
    assert [d.remaining for d in ds[:3]] == [2, 1, 0]
    assert ds[3].retry_after_us == 500_000 and ds[3].reset_after_us == 1_500_000
    assert ds[4].retry_after_us == 1
    assert ds[0].reset_after_us == 500_000 and ds[2].reset_after_us == 1_500_000


def test_token_bucket_cost_and_fractional_rate() -> None:
    tb = TokenBucket(10, 0.5)  # one token per 2 s
    assert tb.interval_us == 2 * S and tb.window_us == 20 * S
    d, tat = tb.decide(0, T0, 10)
    assert d.allowed and d.remaining == 0 and tat == T0 + 20 * S
    d, same = tb.decide(tat, T0 + 3 * S, 2)
    assert not d.allowed and same == tat and d.retry_after_us == S and d.remaining == 1


def test_sliding_log_is_exact() -> None:
    log = SlidingLog(2, 10, name="l")
    ds = run(log, [(T0, 1), (T0 + 4 * S, 1), (T0 + 9 * S, 1), (T0 + 10 * S, 1), (T0 + 10 * S, 1)])
    assert [d.allowed for d in ds] == [True, True, False, True, False]
    assert ds[2].retry_after_us == S  # the entry at T0 leaves the window at T0 + 10 s
    assert ds[4].retry_after_us == 4 * S


def test_sliding_window_counter_weights_previous_window() -> None:
    swc = SlidingWindowCounter(10, 10)
    start = T0 - T0 % (10 * S)
    state = CounterState()
    for _ in range(10):
        d, state = swc.decide(state, start + S, 1)
        assert d.allowed
    d, _ = swc.decide(state, start + 10 * S, 1)  # previous window weighs 100%
    assert not d.allowed
    d, _ = swc.decide(state, start + 15 * S, 1)  # half of it overlaps: 5 used, room for 5
    assert d.allowed and d.remaining == 4
    refused, _ = swc.decide(state, start + 9 * S, 1)
    assert refused.retry_after_us == 2 * S  # at start + 11 s, 9 of 10 still weigh


def test_fixed_window_resets_at_boundary() -> None:
    fw = FixedWindow(2, 1)
    ds = run(fw, [(T0, 1), (T0 + 1, 1), (T0 + 2, 1), (T0 + S, 1)])
    assert [d.allowed for d in ds] == [True, True, False, True]
    assert ds[2].retry_after_us == S - 2 and ds[2].remaining == 0


def test_tiers_all_or_nothing() -> None:
    second, hour = TokenBucket(5, 5, name="s"), FixedWindow(2, 3600, name="h")
    states: list[object] = [0, WindowState()]
    for _ in range(2):
        combined, _, states = decide_tiers([(second, states[0]), (hour, states[1])], T0, 1)
        assert combined.allowed
    combined, tiers, new_states = decide_tiers([(second, states[0]), (hour, states[1])], T0, 1)
    assert not combined.allowed and combined.policy == "h"
    assert tiers[0].allowed and new_states == states  # the bucket was not charged
    with pytest.raises(ValueError):
        decide_tiers([], T0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: TokenBucket(0, 1),
        lambda: TokenBucket(1, 0),
        lambda: TokenBucket(1, 2_000_000),
        lambda: TokenBucket(2**40, 0.001),
        lambda: SlidingLog(-1, 1),
        lambda: SlidingLog(1, 1e-9),
        lambda: SlidingWindowCounter(1, 0.0001),
        lambda: SlidingWindowCounter(2**40, 10**6),
        lambda: FixedWindow(1, float("inf")),
        lambda: FixedWindow(1, "1"),  # type: ignore[arg-type]  # a str window is refused
    ],
)
def test_bad_parameters(make: Any) -> None:
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("cost", [-1, 1.0, "1", True, None, 6])
def test_bad_cost(cost: Any) -> None:
    for policy in (TokenBucket(5, 1), SlidingLog(5, 1), SlidingWindowCounter(5, 1), FixedWindow(5, 1)):
        with pytest.raises(ValueError):
            policy.decide(initial(policy), T0, cost)


def test_spec_round_trip_and_errors() -> None:
    for policy in (
        TokenBucket(5, 1.5, name="a"),
        SlidingLog(5, 2),
        SlidingWindowCounter(5, 1),
        FixedWindow(5, 60),
    ):
        assert policy_from_spec(policy_to_spec(policy)) == policy
    bad_specs: list[Any] = [  # Any: the last one is not a mapping, on purpose
        {"kind": "leaky"},
        {"kind": "token_bucket", "capacity": 1},
        {"kind": "fixed_window", "limit": 1, "window_s": 1, "extra": 1},
        {"kind": "fixed_window", "limit": 1, "window_s": 1, "name": ""},
        [],
    ]
    for bad in bad_specs:
        with pytest.raises(ValueError):
            policy_from_spec(bad)


# --- properties ------------------------------------------------------------------------

policies = st.one_of(
    st.builds(TokenBucket, st.integers(1, 20), st.sampled_from([0.5, 1, 3, 10, 100, 1000])),
    st.builds(SlidingLog, st.integers(1, 20), st.sampled_from([0.001, 0.5, 1, 10])),
    st.builds(SlidingWindowCounter, st.integers(1, 20), st.sampled_from([0.001, 0.5, 1, 10])),
    st.builds(FixedWindow, st.integers(1, 20), st.sampled_from([0.001, 0.5, 1, 10])),
)


@st.composite
def scenario(draw: st.DrawFn) -> tuple[Policy, list[tuple[int, int]]]:
    policy = draw(policies)
    deltas = draw(
        st.lists(
            st.tuples(st.integers(0, 3 * policy.window_us // 2 + 1), st.integers(0, policy.limit)),
            min_size=1,
            max_size=40,
        )
    )
    now, steps = T0, []
    for delta, cost in deltas:
        now += delta
        steps.append((now, cost))
    return policy, steps


def tick(policy: Policy) -> int:
    """Smallest time step the policy distinguishes (the counter works in whole ms)."""
    return 1000 if isinstance(policy, SlidingWindowCounter) else 1


@settings(max_examples=200)
@given(scenario())
def test_refusal_keeps_state_and_retry_and_reset_are_exact(
    case: tuple[Policy, list[tuple[int, int]]],
) -> None:
    policy, steps = case
    state = initial(policy)
    new_state: Any  # a state's type goes with its policy's, which mypy cannot follow
    for now, cost in steps:
        decision, new_state = policy.decide(state, now, cost)
        assert 0 <= decision.remaining <= policy.limit and decision.limit == policy.limit
        # reset_after: full quota exactly then, not one tick earlier.
        full_at = now + decision.reset_after_us
        after: Any = new_state if decision.allowed else state
        assert policy.decide(after, full_at, 0)[0].remaining == policy.limit
        if decision.reset_after_us >= tick(policy):
            assert policy.decide(after, full_at - tick(policy), 0)[0].remaining < policy.limit
        if decision.allowed:
            assert decision.retry_after_us == 0
            assert decision.remaining == policy.decide(new_state, now, 0)[0].remaining
        else:
            assert new_state is state
            retry_at = now + decision.retry_after_us
            assert decision.retry_after_us > 0
            assert policy.decide(state, retry_at, cost)[0].allowed
            assert not policy.decide(state, retry_at - tick(policy), cost)[0].allowed
        state = new_state


@settings(max_examples=200)
@given(scenario())
def test_admissions_never_exceed_the_promise(case: tuple[Policy, list[tuple[int, int]]]) -> None:
    policy, steps = case
    state = initial(policy)
    admitted: list[tuple[int, int]] = []
    for now, cost in steps:
        decision, state = policy.decide(state, now, cost)
        if decision.allowed and cost:
            admitted.append((now, cost))
    if isinstance(policy, TokenBucket):
        for i in range(len(admitted)):
            units = 0
            for j in range(i, len(admitted)):
                units += admitted[j][1]
                assert units <= policy.capacity + (admitted[j][0] - admitted[i][0]) // policy.interval_us
    elif isinstance(policy, SlidingLog):
        for t, _ in admitted:
            assert sum(c for u, c in admitted if t - policy.window_us < u <= t) <= policy.limit
    elif isinstance(policy, FixedWindow):
        per_window: dict[int, int] = {}
        for t, c in admitted:
            per_window[t // policy.window_us] = per_window.get(t // policy.window_us, 0) + c
        assert max(per_window.values(), default=0) <= policy.limit
    else:  # the approximate counter: never more than twice the limit in any window
        for t, _ in admitted:
            assert sum(c for u, c in admitted if t - policy.window_us < u <= t) <= 2 * policy.limit
