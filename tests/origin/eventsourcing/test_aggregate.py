"""Aggregates: snapshot + tail equals full replay (hypothesis), upcasting of old event
schema versions, domain errors, and retry on conflict under concurrent commands."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_kv.core.backoff import FullJitter
from edge_kv.origin.eventsourcing import (
    Aggregate,
    ConcurrencyError,
    DomainError,
    EventStore,
    NewEvent,
    RecordedEvent,
    Repository,
    Snapshot,
    Upcasters,
    applies,
    retry_on_conflict,
)
from edge_kv.origin.resilience import RetryPolicy


class Overdrawn(DomainError):
    code = "test_overdrawn"


class Account(Aggregate):
    event_versions = {"Deposited": 2}  # v1 stored euros as a float, v2 integer cents

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.opened = False
        self.owner = ""
        self.balance = 0
        self.history: list[int] = []
        self.tags: dict[str, int] = {}

    # commands
    def open(self, owner: str) -> None:
        if self.opened:
            raise DomainError("already open")
        self.record("Opened", {"owner": owner})

    def deposit(self, cents: int) -> None:
        if not self.opened:
            raise DomainError("not open")
        self.record("Deposited", {"cents": cents})

    def withdraw(self, cents: int) -> None:
        if cents > self.balance:
            raise Overdrawn(f"balance {self.balance} < {cents}")
        self.record("Withdrawn", {"cents": cents})

    def tag(self, name: str) -> None:
        self.record("Tagged", {"name": name})

    # apply functions
    @applies("Opened")
    def _opened(self, data: dict[str, Any]) -> None:
        self.opened, self.owner = True, data["owner"]

    @applies("Deposited")
    def _deposited(self, data: dict[str, Any]) -> None:
        self.balance += data["cents"]
        self.history.append(data["cents"])

    @applies("Withdrawn")
    def _withdrawn(self, data: dict[str, Any]) -> None:
        self.balance -= data["cents"]
        self.history.append(-data["cents"])

    @applies("Tagged")
    def _tagged(self, data: dict[str, Any]) -> None:
        self.tags[data["name"]] = self.tags.get(data["name"], 0) + 1


@Account.upcasters.register("Deposited", 1)
def _euros_to_cents(data: dict[str, Any]) -> dict[str, Any]:
    return {"cents": round(data["amount"] * 100)}


Command = tuple[str, Any]
commands = st.lists(
    st.one_of(
        st.tuples(st.just("deposit"), st.integers(1, 10_000)),
        st.tuples(st.just("withdraw"), st.integers(1, 5_000)),
        st.tuples(st.just("tag"), st.sampled_from(["vip", "new", "ünï", "a b"])),
        st.tuples(st.just("save"), st.none()),
    ),
    max_size=40,
)


def run(agg: Account, cmd: Command) -> None:
    name, arg = cmd
    with contextlib.suppress(DomainError):  # refused: no event
        getattr(agg, name)(arg)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cmds=commands, every=st.integers(1, 7))
async def test_snapshot_plus_tail_equals_full_replay(
    store: EventStore, cmds: list[Command], every: int
) -> None:
    repo = Repository(store, Account, snapshot_every=every)
    agg = Account(uuid.uuid4().hex)
    agg.open("ann")
    for cmd in cmds:
        if cmd[0] == "save":
            await repo.save(agg)
        else:
            run(agg, cmd)
    await repo.save(agg)
    with_snapshot = await repo.load(agg.id)
    replayed = await repo.load(agg.id, use_snapshot=False)
    assert with_snapshot.version == replayed.version == agg.version
    assert with_snapshot.snapshot_state() == replayed.snapshot_state() == agg.snapshot_state()
    snap = await store.load_snapshot(Account.stream_name(agg.id))
    if agg.version >= every:
        assert snap is not None and snap.version <= agg.version and agg.version - snap.version < every + 40
    else:
        assert snap is None


async def test_snapshot_every_n_and_tail_replay(store: EventStore) -> None:
    repo = Repository(store, Account, snapshot_every=5)
    agg = Account("a")
    agg.open("bo")
    for _ in range(6):
        agg.deposit(10)
        await repo.save(agg)
    snap = await store.load_snapshot("Account-a")
    assert snap is not None and snap.version == 5 and snap.state["balance"] == 40
    # Loading reads only the tail after the snapshot.
    loaded = await repo.load("a")
    assert (loaded.version, loaded.balance) == (7, 60)
    # A snapshot of another shape version is ignored: full replay, same result.
    await store.save_snapshot(Snapshot("Account-a", 7, 99, {"balance": -1}))
    again = await repo.load("a")
    assert (again.version, again.balance) == (7, 60)


async def test_an_upcast_old_event_loads_into_the_current_schema(store: EventStore) -> None:
    stream = Account.stream_name("old")
    await store.append(
        stream,
        [NewEvent("Opened", {"owner": "cy"}), NewEvent("Deposited", {"amount": 12.5}, schema_version=1)],
        expected_version=0,
    )
    repo = Repository(store, Account)
    agg = await repo.load("old")
    assert (agg.balance, agg.history) == (1250, [1250])
    agg.deposit(50)  # recorded at the current schema version
    await repo.save(agg)
    stored = await store.read_stream(stream)
    assert [(e.type, e.schema_version, e.data) for e in stored[1:]] == [
        ("Deposited", 1, {"amount": 12.5}),  # the stored row is never rewritten
        ("Deposited", 2, {"cents": 50}),
    ]
    assert (await repo.load("old")).balance == 1300


def test_upcaster_chains_rename_and_refuse_cycles() -> None:
    ups = Upcasters()
    ups.add("Paid", 1, lambda d: {**d, "currency": "EUR"})
    ups.add("Paid", 2, lambda d: ("PaymentReceived", {"cents": d["amount"], "currency": d["currency"]}))
    old = RecordedEvent(1, "s", 1, "Paid", {"amount": 3}, 1, "id", None, None, {}, datetime.now(UTC))
    new = ups.upcast(old)
    assert (new.type, new.schema_version, new.data) == ("PaymentReceived", 3, {"cents": 3, "currency": "EUR"})
    assert ups.upcast(new) is new
    with pytest.raises(ValueError):
        ups.add("Paid", 1, lambda d: d)
    loop = Upcasters()
    loop.add("A", 1, lambda d: ("B", d))
    loop.add("B", 2, lambda d: ("A", d))
    loop.add("A", 3, lambda d: d)
    # A terminating chain across renames.
    assert (
        loop.upcast(RecordedEvent(1, "s", 1, "A", {}, 1, "i", None, None, {}, old.recorded_at)).schema_version
        == 4
    )
    # Subclass registries are separate from the base's.
    assert not Aggregate.upcasters and Account.upcasters


async def test_domain_errors_refuse_without_events_and_are_not_retried(store: EventStore) -> None:
    repo = Repository(store, Account)
    await repo.execute("d", lambda a: a.open("di"))
    calls = 0

    def overdraw(a: Account) -> None:
        nonlocal calls
        calls += 1
        a.withdraw(1)

    with pytest.raises(Overdrawn) as info:
        await repo.execute("d", overdraw)
    assert calls == 1 and info.value.status == 422
    assert await store.stream_version("Account-d") == 1


async def test_concurrent_commands_all_succeed_with_retry_on_conflict(store: EventStore) -> None:
    repo = Repository(store, Account, snapshot_every=4)
    await repo.execute("c", lambda a: a.open("ed"))
    policy = RetryPolicy(max_attempts=50, max_total=30, backoff=FullJitter(base=0.001, cap=0.02))

    async with asyncio.TaskGroup() as tg:
        for i in range(1, 21):
            tg.create_task(repo.execute("c", lambda a, i=i: a.deposit(i), policy=policy))  # type: ignore[misc]
    final = await repo.load("c")
    assert final.balance == sum(range(1, 21)) and final.version == 21
    assert sorted(final.history) == list(range(1, 21))
    assert policy.metrics.retries > 0, "no command ever conflicted: the test proved nothing"
    assert final.snapshot_state() == (await repo.load("c", use_snapshot=False)).snapshot_state()


async def test_retry_is_bounded_and_retries_only_conflicts(store: EventStore) -> None:
    repo = Repository(store, Account)
    await repo.execute("r", lambda a: a.open("fi"))
    attempts = 0

    async def always_raced(a: Account) -> None:
        nonlocal attempts
        attempts += 1
        a.deposit(1)
        # Another writer gets in between this command's load and its save.
        other = await repo.load("r")
        other.deposit(100)
        await repo.save(other)

    with pytest.raises(ConcurrencyError) as info:
        await repo.execute(
            "r", always_raced, policy=RetryPolicy(max_attempts=3, backoff=FullJitter(0.001, 0.001))
        )
    assert attempts == 3
    assert info.value.expected < info.value.actual

    raced_once = 0

    async def raced_first_time(a: Account) -> None:
        nonlocal raced_once
        a.deposit(1)
        if raced_once == 0:
            raced_once += 1
            other = await repo.load("r")
            other.deposit(1000)
            await repo.save(other)

    before = await repo.load("r")
    after = await repo.execute("r", raced_first_time)
    assert after.balance == before.balance + 1001

    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        raise TimeoutError("outcome unknown: not retried")

    with pytest.raises(TimeoutError):
        await retry_on_conflict(flaky)
    assert calls == 1


async def test_aggregate_rules(store: EventStore) -> None:
    agg = Account("x")
    with pytest.raises(DomainError):
        agg.deposit(1)
    agg.open("gi")
    with pytest.raises(ValueError):
        agg.take_snapshot()  # pending events
    with pytest.raises(LookupError):
        agg.record("Unknown", {})
    assert [e.type for e in agg.pending] == ["Opened"]
    repo = Repository(store, Account, snapshot_every=None)
    assert await repo.save(agg) != [] and agg.pending == () and agg.version == 1
    assert await repo.save(agg) == []
    with pytest.raises(ValueError):
        Repository(store, Account, snapshot_every=0)
