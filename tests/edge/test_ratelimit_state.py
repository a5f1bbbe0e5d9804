"""Stored-state decisions and the block cache (edge-safe: runs in Pyodide too)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_kv.core.decision import Decision
from edge_kv.core.ratelimit import FixedWindow, SlidingLog, SlidingWindowCounter, TokenBucket, decide_tiers
from edge_kv.edge.ratelimit.blockcache import BlockCache
from edge_kv.edge.ratelimit.state import (
    decide_stored,
    decision_from_json,
    decision_to_json,
    dumps,
    initial_state,
    load_states,
    loads,
)

TIERS = (
    TokenBucket(5, 2.0, name="tb"),
    SlidingLog(7, 3.0, name="log"),
    SlidingWindowCounter(6, 2.0, name="swc"),
    FixedWindow(8, 1.5, name="fw"),
)


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=400_000), st.integers(min_value=0, max_value=3)),
        max_size=60,
    )
)
def test_stored_round_trip_matches_core(steps: list[tuple[int, int]]) -> None:
    """Persisting through JSON after every step gives the core's decisions exactly."""
    now = 1_700_000_000_000_000
    stored_text: str | None = None
    states: list[object] = [initial_state(p) for p in TIERS]
    for gap, cost in steps:
        now += gap
        outcome = decide_stored(TIERS, loads(stored_text), now, cost)
        combined, decisions, new_states = decide_tiers(list(zip(TIERS, states, strict=True)), now, cost)
        assert outcome.decision == combined
        assert list(outcome.decisions) == decisions
        states = new_states
        if outcome.stored is not None:
            stored_text = dumps(outcome.stored)
        else:
            assert not combined.allowed or cost == 0
        assert outcome.expires_us >= now


def test_refusal_and_peek_write_nothing() -> None:
    tiers = (TokenBucket(1, 1.0, name="one"),)
    first = decide_stored(tiers, None, 10**12, 1)
    assert first.decision.allowed and first.stored == {"one": ["token_bucket", 10**12 + 1_000_000]}
    second = decide_stored(tiers, first.stored, 10**12, 1)
    assert not second.decision.allowed and second.stored is None
    peek = decide_stored(tiers, first.stored, 10**12, 0)
    assert peek.decision.allowed and peek.stored is None


def test_stale_or_corrupt_state_starts_fresh() -> None:
    tb = TokenBucket(3, 1.0, name="x")
    assert load_states([tb], {"x": ["fixed_window", [1, 2]]}) == [0]
    assert load_states([tb], {"x": ["token_bucket", "junk"]}) == [0]
    assert load_states([tb], {"x": ["token_bucket", True]}) == [0]
    assert load_states([tb], {"x": "nonsense"}) == [0]  # type: ignore[dict-item]  # corrupt on purpose
    assert load_states([tb], {"x": ["token_bucket", 42]}) == [42]
    assert loads("not json") is None
    assert loads("[1]") is None
    assert loads(None) is None


def test_decision_json_round_trip_and_validation() -> None:
    d = Decision(False, 10, 0, 1500, 9000, "p")
    assert decision_from_json(json.loads(json.dumps(decision_to_json(d)))) == d
    with pytest.raises(ValueError):
        decision_from_json({"allowed": True})
    with pytest.raises(ValueError):
        decision_from_json({**decision_to_json(d), "limit": "10"})
    with pytest.raises(ValueError):
        decision_from_json([])


REFUSED = Decision(False, 5, 0, retry_after_us=2_000_000, reset_after_us=5_000_000, policy="p")


def test_block_cache_refuses_until_retry_after() -> None:
    cache = BlockCache(10)
    assert cache.check("k", 0, 1) is None
    cache.block("k", REFUSED, 1_000, 1)
    hit = cache.check("k", 501_000, 1)
    assert hit is not None and not hit.allowed
    assert hit.retry_after_us == 1_500_000 and hit.reset_after_us == 4_500_000
    # Costlier requests are refused too; cheaper ones (peeks) go to the backend.
    assert cache.check("k", 501_000, 3) is not None
    assert cache.check("k", 501_000, 0) is None
    assert cache.hits == 2
    assert cache.check("k", 2_001_000, 1) is None
    assert len(cache) == 0


def test_block_cache_ignores_allowed_and_keeps_the_cheaper_block() -> None:
    cache = BlockCache(10)
    cache.block("k", Decision(True, 5, 4, 0, 1, "p"), 0, 1)
    assert len(cache) == 0
    cache.block("k", REFUSED, 0, 1)
    cache.block("k", Decision(False, 5, 0, 9_000_000, 9_000_000, "p"), 0, 4)
    hit = cache.check("k", 0, 1)
    assert hit is not None and hit.retry_after_us == 2_000_000


def test_block_cache_is_bounded() -> None:
    cache = BlockCache(100)
    for i in range(1000):
        cache.block(f"k{i}", REFUSED, i, 1)
        assert len(cache) <= 100
    assert cache.check("k999", 1000, 1) is not None
    assert cache.check("k0", 1000, 1) is None
    with pytest.raises(ValueError):
        BlockCache(0)
