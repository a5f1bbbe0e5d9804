"""Lock record state machine: lease, fencing token, FIFO queue (edge-safe: runs in Pyodide)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_kv.core.errors import LockNotOwned
from edge_kv.edge.locks.state import LockLimits, LockRecord, check_owner

L = LockLimits(max_ttl_ms=10_000, max_wait_ms=5_000, max_waiters=3, poll_grace_ms=1_000)
A, B, C, D = "owner-aaaa", "owner-bbbb", "owner-cccc", "owner-dddd"


def test_acquire_extend_release_and_tokens() -> None:
    r0 = LockRecord()
    res, r1 = r0.acquire(A, 1000, 0, L)
    assert res.lease is not None and res.lease.token == 1 and res.lease.expires_at_ms == 1000
    res, _ = r1.acquire(B, 1000, 10, L)
    assert res.lease is None and res.position is None and res.holder_expires_at_ms == 1000
    lease, r2 = r1.extend(A, 2000, 500, L)
    assert lease.expires_at_ms == 2500 and lease.token == 1
    with pytest.raises(LockNotOwned):
        r2.extend(B, 2000, 600, L)
    with pytest.raises(LockNotOwned):
        r2.release(B, 600)
    r3 = r2.release(A, 600)
    res, r4 = r3.acquire(B, 1000, 700, L)
    assert res.lease is not None and res.lease.token == 2
    # Expired lease: free for the next acquirer, token still grows; the old owner is out.
    res, r5 = r4.acquire(C, 1000, 1700, L)
    assert res.lease is not None and res.lease.token == 3
    with pytest.raises(LockNotOwned):
        r5.release(B, 1701)


def test_reacquire_by_holder_is_refused() -> None:
    _, r = LockRecord().acquire(A, 1000, 0, L)
    res, r2 = r.acquire(A, 1000, 1, L, wait_ms=100)
    assert res.lease is None and res.reason == "already held by this owner" and r2 == r


@pytest.mark.parametrize(
    ("owner", "ttl", "wait"),
    [
        ("short", 100, 0),
        (A, 0, 0),
        (A, -5, 0),
        (A, 10_001, 0),
        (A, 100, -1),
        (A, 100, 5_001),
        (A, 1.5, 0),
        ("has space x", 100, 0),
        (A, 100, True),
    ],
)
def test_bad_arguments_raise_value_error(owner: str, ttl: int, wait: int) -> None:
    with pytest.raises(ValueError):
        LockRecord().acquire(owner, ttl, 0, L, wait_ms=wait)


def test_fifo_queue_order_and_grace() -> None:
    _, r = LockRecord().acquire(A, 1000, 0, L)
    res, r = r.acquire(B, 1000, 10, L, wait_ms=3000)
    assert res.position == 1
    res, r = r.acquire(C, 1000, 20, L, wait_ms=3000)
    assert res.position == 2
    res, r = r.acquire(D, 1000, 30, L, wait_ms=3000)
    assert res.position == 3
    res, r = r.acquire("owner-eeee", 1000, 40, L, wait_ms=3000)
    assert res.position is None and res.reason == "wait queue is full"
    r = r.release(A, 500)
    # C polls first but B is ahead of it: C stays queued.
    res, r = r.acquire(C, 1000, 600, L, wait_ms=3000)
    assert res.lease is None and res.position == 2
    # Without waiting, a newcomer cannot jump the queue either.
    res, r = r.acquire("owner-ffff", 1000, 600, L)
    assert res.lease is None
    res, r = r.acquire(B, 1000, 700, L, wait_ms=3000)
    assert res.lease is not None and res.lease.token == 2
    assert [w.owner for w in r.waiters] == [C, D]
    # D stopped polling at 30 ms: after the grace it is dropped, C is now alone.
    r = r.expire(1200, L)
    assert [w.owner for w in r.waiters] == [C]
    r = r.release(B, 1200)
    res, r = r.acquire(C, 1000, 1300, L, wait_ms=10)
    assert res.lease is not None and res.lease.token == 3 and r.waiters == ()


def test_wakeups_and_alarm_expiry() -> None:
    _, r = LockRecord().acquire(A, 1000, 0, L)
    assert r.next_wakeup_ms(L) == 1000
    _, r = r.acquire(B, 1000, 100, L, wait_ms=400)
    assert r.next_wakeup_ms(L) == 500
    r2 = r.expire(1000, L)
    assert r2.state.lease is None and r2.state.last_token == 1 and r2.waiters == ()
    assert r2.next_wakeup_ms(L) is None
    assert r.expire(999, L).state.lease is not None


def test_record_json_round_trip_and_corruption() -> None:
    _, r = LockRecord().acquire(A, 1000, 0, L)
    _, r = r.acquire(B, 1000, 1, L, wait_ms=100)
    assert LockRecord.loads(r.dumps()) == r
    assert LockRecord.loads(None) == LockRecord()
    for bad in (
        '{"lease": null}',
        '{"last_token": -1, "lease": null, "waiters": []}',
        "[]",
        '{"last_token": 1, "lease": [1], "waiters": []}',
    ):
        with pytest.raises(ValueError):
            LockRecord.loads(bad)


def test_check_owner() -> None:
    assert check_owner(A) == A
    for bad in (None, "", "x" * 7, "x" * 129, "tab\towner1"):
        with pytest.raises(ValueError):
            check_owner(bad)


OPS = st.lists(
    st.tuples(
        st.sampled_from(["acq", "ext", "rel", "alarm"]),
        st.sampled_from([A, B, C]),
        st.integers(min_value=0, max_value=700),
        st.integers(min_value=1, max_value=1500),
    ),
    max_size=80,
)


@given(OPS)
def test_tokens_strictly_increase_and_one_holder(ops: list[tuple[str, str, int, int]]) -> None:
    now = 0
    r = LockRecord()
    last = 0
    for op, owner, gap, ttl in ops:
        now += gap
        if op == "acq":
            res, r = r.acquire(owner, ttl, now, L, wait_ms=min(ttl, 5000))
            if res.lease is not None:
                assert res.lease.token == last + 1
                last = res.lease.token
        elif op == "ext":
            try:
                lease, r = r.extend(owner, ttl, now, L)
                assert lease.token == last
            except LockNotOwned:
                pass
        elif op == "rel":
            with contextlib.suppress(LockNotOwned):
                r = r.release(owner, now)
        else:
            r = r.expire(now, L)
        r = LockRecord.loads(r.dumps())
        assert r.state.last_token == last
        holder = r.state.holder(now)
        assert holder is None or holder.token == last
