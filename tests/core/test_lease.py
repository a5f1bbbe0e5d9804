"""Lease arithmetic: quorum/drift/validity numbers, fencing, and the lease state machine."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_kv.core.errors import LockError, LockNotOwned
from edge_kv.core.lease import (
    DRIFT_FLOOR_MS,
    Lease,
    LeaseState,
    drift_ms,
    fencing_accepts,
    quorum,
    redlock_validity_ms,
)

# --- Redlock numbers -------------------------------------------------------------


@pytest.mark.parametrize(("n", "majority"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)])
def test_quorum_is_a_strict_majority(n: int, majority: int) -> None:
    assert quorum(n) == majority


@given(st.integers(min_value=1, max_value=1000))
def test_quorum_two_majorities_always_overlap(n: int) -> None:
    q = quorum(n)
    assert q <= n
    assert 2 * q > n  # two disjoint quorums cannot exist
    assert 2 * (q - 1) <= n  # and it is the smallest such number


@pytest.mark.parametrize("bad", [0, -1, True, 3.0, "3", None])
def test_quorum_rejects_non_positive_or_non_int(bad: object) -> None:
    with pytest.raises(ValueError, match="n must be"):
        quorum(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ttl", "factor", "expected"),
    [
        (10_000, 0.01, 102),
        (30_000, 0.01, 302),
        (150, 0.01, 3),
        (0, 0.01, 2),
        (1_000, 0.05, 52),
        (1_000, 0.0, 2),
    ],
)
def test_drift_is_ttl_times_factor_plus_floor(ttl: int, factor: float, expected: int) -> None:
    assert drift_ms(ttl, factor) == expected


def test_drift_floor_is_two_ms() -> None:
    assert DRIFT_FLOOR_MS == 2
    assert drift_ms(1) == 2


@pytest.mark.parametrize(
    ("ttl", "elapsed", "validity"),
    [
        (10_000, 0, 9_898),
        (10_000, 50, 9_848),
        (10_000, 9_898, 0),  # exactly used up: not valid (caller treats <= 0 as failure)
        (10_000, 12_000, -2_102),
        (100, 97, 0),
    ],
)
def test_redlock_validity(ttl: int, elapsed: int, validity: int) -> None:
    assert redlock_validity_ms(ttl, elapsed) == validity


@given(
    st.integers(min_value=1, max_value=10**9),
    st.integers(min_value=0, max_value=10**9),
    st.integers(min_value=0, max_value=10**6),
)
def test_validity_shrinks_as_acquisition_takes_longer(ttl: int, elapsed: int, more: int) -> None:
    v = redlock_validity_ms(ttl, elapsed)
    assert v < ttl
    assert redlock_validity_ms(ttl, elapsed + more) == v - more


# --- fencing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("highest", "token", "accepted"),
    [(None, 1, True), (None, 0, True), (5, 5, True), (5, 6, True), (5, 4, False), (5, 0, False)],
)
def test_fencing_accepts_only_tokens_not_below_the_highest_seen(
    highest: int | None, token: int, accepted: bool
) -> None:
    assert fencing_accepts(highest, token) is accepted


@pytest.mark.parametrize(
    ("highest", "seen_owner", "token", "owner", "accepted"),
    [
        (None, "", 4, "A", True),  # first write: any owner
        (4, "A", 4, "A", True),  # the same holder again
        (4, "A", 4, "B", False),  # token 4 issued twice: the second owner is refused
        (4, "A", 4, "", False),  # a plain token cannot pass as the owner
        (4, "", 4, "A", False),  # nor an owner as the plain-token writer
        (4, "", 4, "", True),  # plain tokens, as before owners existed
        (4, "A", 5, "B", True),  # a newer holder
        (4, "A", 3, "A", False),  # an older token, whoever sends it
    ],
)
def test_fencing_equal_token_only_from_the_owner_that_used_it_first(
    highest: int | None, seen_owner: str, token: int, owner: str, accepted: bool
) -> None:
    assert fencing_accepts(highest, token, seen_owner, owner) is accepted


# --- Lease ----------------------------------------------------------------------


def test_lease_remaining_clamps_at_zero() -> None:
    lease = Lease("a", 1, expires_at_ms=1_000)
    assert lease.remaining_ms(400) == 600
    assert lease.remaining_ms(1_000) == 0
    assert lease.remaining_ms(5_000) == 0


def test_lease_and_state_are_immutable() -> None:
    lease, state = LeaseState().acquire("a", 100, 0)
    assert lease is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        lease.token = 99  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.last_token = 0  # type: ignore[misc]


# --- LeaseState -----------------------------------------------------------------


def test_acquire_free_resource_grants_token_one() -> None:
    lease, state = LeaseState().acquire("alice", 1_000, 50)
    assert lease == Lease("alice", 1, 1_050)
    assert state == LeaseState(lease, 1)
    assert state.holder(50) == lease
    assert state.holder(1_049) == lease


def test_contender_is_refused_and_state_unchanged() -> None:
    _, state = LeaseState().acquire("alice", 1_000, 0)
    lease, after = state.acquire("bob", 1_000, 500)
    assert lease is None
    assert after is state


def test_lock_is_not_reentrant() -> None:
    _, state = LeaseState().acquire("alice", 1_000, 0)
    lease, after = state.acquire("alice", 1_000, 10)
    assert lease is None
    assert after is state


def test_expired_lease_is_free_at_exactly_its_expiry_and_reacquirable() -> None:
    _, state = LeaseState().acquire("alice", 1_000, 0)
    assert state.holder(999) is not None
    assert state.holder(1_000) is None
    lease, state2 = state.acquire("bob", 500, 1_000)
    assert lease == Lease("bob", 2, 1_500)
    assert state2.last_token == 2


def test_extend_by_owner_moves_expiry_keeps_token() -> None:
    first, state = LeaseState().acquire("alice", 1_000, 0)
    assert first is not None
    lease, state = state.extend("alice", 2_000, 900)
    assert lease == Lease("alice", first.token, 2_900)
    assert state.holder(2_899) == lease
    assert state.last_token == first.token
    # extend may also shorten: the expiry is always now + ttl
    lease, state = state.extend("alice", 10, 1_000)
    assert lease.expires_at_ms == 1_010


@pytest.mark.parametrize(
    ("who", "at"),
    [("bob", 500), ("alice", 1_000), ("alice", 5_000)],
    ids=["wrong-owner", "at-expiry", "after-expiry"],
)
def test_extend_refused_unless_live_owner(who: str, at: int) -> None:
    _, state = LeaseState().acquire("alice", 1_000, 0)
    with pytest.raises(LockNotOwned):
        state.extend(who, 1_000, at)


def test_extend_and_release_on_never_acquired_resource() -> None:
    with pytest.raises(LockNotOwned):
        LeaseState().extend("alice", 1_000, 0)
    with pytest.raises(LockNotOwned):
        LeaseState().release("alice", 0)


def test_release_frees_and_keeps_last_token() -> None:
    _, state = LeaseState().acquire("alice", 1_000, 0)
    released = state.release("alice", 10)
    assert released.lease is None
    assert released.holder(10) is None
    assert released.last_token == 1
    lease, _ = released.acquire("bob", 1_000, 11)
    assert lease is not None and lease.token == 2


@pytest.mark.parametrize(("who", "at"), [("bob", 10), ("alice", 1_000)], ids=["wrong-owner", "expired"])
def test_release_refused_unless_live_owner(who: str, at: int) -> None:
    _, state = LeaseState().acquire("alice", 1_000, 0)
    with pytest.raises(LockNotOwned):
        state.release(who, at)


def test_double_release_is_refused() -> None:
    _, state = LeaseState().acquire("alice", 1_000, 0)
    state = state.release("alice", 1)
    with pytest.raises(LockNotOwned):
        state.release("alice", 2)


def test_not_owner_is_a_lease_error() -> None:
    assert issubclass(LockNotOwned, LockError)
    assert issubclass(LockError, Exception)
    assert not issubclass(LockNotOwned, ValueError)  # bad input and lost ownership stay distinguishable


@pytest.mark.parametrize("ttl", [0, -1, True, 1.5, "10", None])
def test_bad_ttl_is_a_value_error_everywhere(ttl: object) -> None:
    _, held = LeaseState().acquire("alice", 1_000, 0)
    with pytest.raises(ValueError, match="ttl_ms"):
        LeaseState().acquire("alice", ttl, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl_ms"):
        held.extend("alice", ttl, 1)  # type: ignore[arg-type]


def test_empty_owner_is_refused() -> None:
    with pytest.raises(ValueError, match="owner"):
        LeaseState().acquire("", 1_000, 0)


# --- property: an operation log never breaks the lease invariants --------------

OWNERS = ("a", "b", "c")
_op = st.one_of(
    st.tuples(st.just("acquire"), st.sampled_from(OWNERS), st.integers(1, 50)),
    st.tuples(st.just("extend"), st.sampled_from(OWNERS), st.integers(1, 50)),
    st.tuples(st.just("release"), st.sampled_from(OWNERS), st.just(0)),
)


@given(st.lists(st.tuples(st.integers(0, 40), _op), max_size=60))
def test_tokens_strictly_increase_and_one_holder_at_a_time(
    steps: list[tuple[int, tuple[str, str, int]]],
) -> None:
    """Random acquire/extend/release/expiry sequences, checked against a tiny model."""
    state = LeaseState()
    now = 0
    granted: list[int] = []
    model_owner: str | None = None
    model_expiry = 0
    for advance, (op, owner, ttl) in steps:
        now += advance
        live = model_owner if model_owner is not None and model_expiry > now else None
        held = state.holder(now)
        assert (held.owner if held else None) == live
        before = state.last_token
        if op == "acquire":
            lease, state = state.acquire(owner, ttl, now)
            if live is None:
                assert lease is not None
                assert lease.token == before + 1
                granted.append(lease.token)
                model_owner, model_expiry = owner, now + ttl
            else:
                assert lease is None
        elif op == "extend":
            if live == owner:
                lease, state = state.extend(owner, ttl, now)
                assert lease.token == granted[-1]
                model_expiry = now + ttl
            else:
                with pytest.raises(LockNotOwned):
                    state.extend(owner, ttl, now)
        else:
            if live == owner:
                state = state.release(owner, now)
                model_owner = None
            else:
                with pytest.raises(LockNotOwned):
                    state.release(owner, now)
        assert state.last_token >= before
        if state.lease is not None:
            assert state.lease.token == state.last_token
    assert granted == sorted(set(granted))
    assert granted == list(range(1, len(granted) + 1))
    # every token ever granted passes fencing only while it is the newest
    for older, newer in itertools.pairwise(granted):
        assert not fencing_accepts(newer, older)
        assert fencing_accepts(older, newer)
