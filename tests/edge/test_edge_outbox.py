"""Edge outbox logic (edge-safe: runs in Pyodide): delivery rules, order, backoff, dead
letters, atomic writes and signatures, over in-memory storage and a fake origin."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_kv.core import httpsig
from edge_kv.core.backoff import Exponential
from edge_kv.core.errors import InvalidInput
from edge_kv.core.outbox import (
    DEAD_LETTER,
    DELIVERED,
    REJECTED,
    RETRY,
    DeliveryPolicy,
    classify_delivery,
)
from edge_kv.edge.outbox import EdgeOutbox, OutboxSigner, SigningUnavailable, signer_from_env
from edge_kv.edge.runtime import OriginResponse
from edge_kv.edge.testing import MemoryEnv, MemoryStorage

KEYS = {"k1": bytes(range(32))}
URL = "https://origin.test/edge-events"


# -- pure rules ----------------------------------------------------------------------------
@given(st.integers(100, 599))
def test_classification_is_total(status: int) -> None:
    outcome = classify_delivery(status)
    assert outcome == (DELIVERED if 200 <= status < 300 else outcome)
    assert outcome in (DELIVERED, RETRY, REJECTED)
    if status >= 500 or status in (401, 403, 404, 408, 429):
        assert outcome == RETRY


def test_classification_examples() -> None:
    assert classify_delivery(None) == RETRY
    assert classify_delivery(204) == DELIVERED
    assert classify_delivery(400) == classify_delivery(422) == REJECTED
    with pytest.raises(InvalidInput):
        classify_delivery(True)


@given(
    st.integers(1, 50),
    st.integers(0, 60),
    st.sampled_from([RETRY, REJECTED]),
    st.none() | st.floats(0, 10_000),
    st.integers(0, 2**40),
)
def test_after_failure(
    max_attempts: int, before: int, outcome: str, retry_after: float | None, now: int
) -> None:
    policy = DeliveryPolicy(max_attempts=max_attempts, min_delay_ms=50, max_retry_after_ms=60_000)
    step = policy.after_failure(before, outcome, now, random.Random(before), retry_after)
    assert step.attempts == before + 1
    if outcome == REJECTED or before + 1 >= max_attempts:
        assert step.action == DEAD_LETTER
    else:
        assert step.action == RETRY
        assert now + 50 <= step.at_ms <= now + max(300_000, 60_000)
        if retry_after is not None:
            assert step.at_ms >= now + min(60_000, int(retry_after * 1000))


def test_policy_validation() -> None:
    with pytest.raises(InvalidInput):
        DeliveryPolicy(max_attempts=0)
    with pytest.raises(InvalidInput):
        DeliveryPolicy(backoff=object())  # type: ignore[arg-type]


# -- the outbox over in-memory storage -----------------------------------------------------
class TxStorage(MemoryStorage):
    """MemoryStorage plus ``transactionSync`` (a SQLite savepoint, as at the edge)."""

    def transactionSync(self, fn: Any) -> Any:
        db = self.sql.db
        db.execute("SAVEPOINT tx")
        try:
            result = fn()
        except BaseException:
            db.execute("ROLLBACK TO tx")
            db.execute("RELEASE tx")
            raise
        db.execute("RELEASE tx")
        return result


class Ctx:
    def __init__(self) -> None:
        self.storage = TxStorage()
        self.id = "object-1"


class FakeOrigin:
    """Answers from a script of statuses (None: connection refused), then 200."""

    def __init__(
        self, script: list[int | None] | None = None, per_event: dict[int, int] | None = None
    ) -> None:
        self.script = list(script or [])
        self.per_event = per_event or {}
        self.calls: list[tuple[str, list[tuple[str, str]], bytes]] = []
        self.accepted: list[dict[str, Any]] = []

    async def __call__(
        self, url: str, method: str, headers: list[tuple[str, str]], body: bytes, *, timeout_ms: int
    ) -> OriginResponse:
        self.calls.append((url, list(headers), body))
        envelope = json.loads(body)
        status = self.script.pop(0) if self.script else self.per_event.get(envelope["seq"], 200)
        if status is None:
            raise ConnectionError("connection refused")
        if 200 <= status < 300:
            self.accepted.append(envelope)
        return OriginResponse(status, [("retry-after", "0")] if status == 503 else [], b"answer")


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


def make(origin: FakeOrigin, *, max_attempts: int = 3, ctx: Ctx | None = None) -> tuple[EdgeOutbox, Clock]:
    clock = Clock()
    outbox = EdgeOutbox(
        ctx or Ctx(),
        endpoint=URL,
        signer=OutboxSigner(httpsig.Keyring.from_secrets(KEYS)),
        policy=DeliveryPolicy(
            max_attempts=max_attempts, backoff=Exponential(base=1.0, cap=8.0), min_delay_ms=10
        ),
        source="orders-1",
        fetch=origin,
        rng=random.Random(1),
        clock_ms=clock,
    )
    return outbox, clock


async def test_delivers_in_order_and_signs() -> None:
    origin = FakeOrigin()
    outbox, _ = make(origin)
    ids = [await outbox.add("t", f"k{i}", {"i": i}) for i in range(5)]
    assert outbox.storage.alarm_ms is not None
    report = await outbox.deliver()
    assert report.delivered == 5 and report.pending == 0 and report.next_attempt_ms is None
    assert [e["id"] for e in origin.accepted] == ids
    assert [e["seq"] for e in origin.accepted] == [1, 2, 3, 4, 5]
    assert origin.accepted[0]["payload"] == {"i": 0} and origin.accepted[0]["source"] == "orders-1"
    url, headers, body = origin.calls[0]
    request = httpsig.HttpRequest.build("POST", url, headers)
    verified = httpsig.verify_request(
        request,
        httpsig.Keyring.from_secrets(KEYS),
        now=int(__import__("time").time()),
        body=body,
        required_components=("@method", "@target-uri", "content-digest", "x-edge-event-id"),
    )
    assert (
        verified.covered["x-edge-event-id"] == ids[0] and verified.covered["x-edge-issuer"] == "edge-outbox"
    )
    with pytest.raises(httpsig.SignatureRejected):
        httpsig.verify_request(
            request, httpsig.Keyring.from_secrets(KEYS), now=verified.created or 0, body=b"{}"
        )


async def test_failure_blocks_later_entries_until_retry() -> None:
    origin = FakeOrigin(script=[None, 503])
    outbox, clock = make(origin, max_attempts=5)
    await outbox.add("t", "a", 1)
    await outbox.add("t", "b", 2)
    report = await outbox.deliver()
    assert report.delivered == 0 and report.pending == 2 and len(origin.calls) == 1
    assert report.next_attempt_ms is not None and report.next_attempt_ms > clock.ms
    assert outbox.storage.alarm_ms == report.next_attempt_ms
    assert "ConnectionError" in (report.last_error or "")
    # Too early: nothing is sent.
    assert (await outbox.deliver()).delivered == 0 and len(origin.calls) == 1
    clock.ms = report.next_attempt_ms
    report = await outbox.deliver()  # 503 now
    assert report.delivered == 0 and outbox.pending()[0].attempts == 2
    clock.ms = report.next_attempt_ms or 0
    report = await outbox.deliver()
    assert report.delivered == 2 and [e["key"] for e in origin.accepted] == ["a", "b"]


async def test_dead_letter_after_rejection_or_max_attempts_then_continue() -> None:
    origin = FakeOrigin(per_event={2: 422, 3: 500})
    outbox, clock = make(origin, max_attempts=2)
    for i in range(4):
        await outbox.add("t", f"k{i}", i)
    report = await outbox.deliver()
    assert report.delivered == 1 and report.dead_lettered == 1  # seq 2 rejected at once; seq 3 waits
    clock.ms = report.next_attempt_ms or 0
    report = await outbox.deliver()
    assert report.dead_lettered == 1 and report.delivered == 1 and report.pending == 0
    dead = outbox.dead_letters()
    assert [(d.seq, d.attempts) for d in dead] == [(2, 1), (3, 2)]
    assert "HTTP 422" in (dead[0].last_error or "") and "HTTP 500" in (dead[1].last_error or "")
    assert [e["seq"] for e in origin.accepted] == [1, 4]


async def test_entry_rolls_back_with_the_state_change() -> None:
    origin = FakeOrigin()
    outbox, _ = make(origin)
    storage = outbox.storage
    storage.sql.exec("CREATE TABLE state (n INTEGER)")

    def failing() -> None:
        storage.sql.exec("INSERT INTO state VALUES (1)")
        outbox.add_sync("t", "k", {"n": 1})
        raise RuntimeError("the object's own write failed")

    with pytest.raises(RuntimeError):
        storage.transactionSync(failing)
    assert outbox.pending() == [] and storage.sql.exec("SELECT * FROM state").toArray() == []

    def ok() -> None:
        storage.sql.exec("INSERT INTO state VALUES (1)")
        outbox.add_sync("t", "k", {"n": 1})

    storage.transactionSync(ok)
    assert [e.seq for e in outbox.pending()] == [1]


async def test_sequence_numbers_are_never_reused() -> None:
    origin = FakeOrigin()
    outbox, _ = make(origin)
    await outbox.add("t", "k", 1)
    await outbox.deliver()
    await outbox.add("t", "k", 2)
    assert outbox.pending()[0].seq == 2


async def test_bad_input_writes_nothing() -> None:
    outbox, _ = make(FakeOrigin())
    for topic, key, payload in (("", "k", 1), ("t", "", 1), ("t", "k", float("nan")), ("t", "k", object())):
        with pytest.raises(InvalidInput):
            outbox.add_sync(topic, key, payload)
    assert outbox.pending() == []


async def test_missing_signing_key_waits_without_spending_attempts() -> None:
    origin = FakeOrigin()
    env = MemoryEnv()
    outbox = EdgeOutbox(Ctx(), env, endpoint=URL, signer=lambda: signer_from_env(env), fetch=origin)
    await outbox.add("t", "k", 1)
    report = await outbox.deliver()
    assert report.delivered == 0 and origin.calls == [] and outbox.pending()[0].attempts == 0
    assert "EDGE_KV_SIGNING_KEYS" in (report.last_error or "")
    with pytest.raises(SigningUnavailable):
        signer_from_env(env)


@given(st.lists(st.sampled_from([None, 200, 200, 500, 503, 422]), max_size=40))
async def test_order_property(script: list[int | None]) -> None:
    """Whatever the origin answers, accepted entries arrive in seq order, each entry ends
    delivered or dead-lettered exactly once, and nothing is lost."""
    origin = FakeOrigin(script=script)
    outbox, clock = make(origin, max_attempts=3)
    for i in range(6):
        await outbox.add("t", f"k{i}", i)
    for _ in range(100):
        report = await outbox.deliver()
        if report.pending == 0:
            break
        clock.ms = report.next_attempt_ms or clock.ms
    delivered = [e["seq"] for e in origin.accepted]
    dead = [d.seq for d in outbox.dead_letters()]
    assert delivered == sorted(delivered)
    assert sorted(delivered + dead) == [1, 2, 3, 4, 5, 6]
