"""PostgreSQL advisory locks against the machine's PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest
import pytest_asyncio

from edge_kv.origin.locks import LockAcquireTimeout, LockError, LockNotOwned
from edge_kv.origin.locks.pg_advisory import (
    PgAdvisoryLock,
    advisory_key,
    advisory_transaction,
    try_xact_lock,
    xact_lock,
)

Conn = psycopg.AsyncConnection[Any]


@pytest.fixture
def ns() -> str:
    """A namespace of our own: advisory keys are shared by every client of the database."""
    return f"test-{uuid.uuid4().hex}"


@pytest_asyncio.fixture
async def connect(pg_dsn: str) -> AsyncIterator[Callable[[], Awaitable[Conn]]]:
    opened: list[Conn] = []

    async def make() -> Conn:
        try:
            conn = await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as exc:  # pragma: no cover - environment
            pytest.skip(f"PostgreSQL not reachable at {pg_dsn}: {exc}")
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        await conn.close()


def test_key_mapping_is_stable_signed_int64_and_namespaced() -> None:
    k = advisory_key("orders:42")
    assert k == advisory_key("orders:42")
    assert -(2**63) <= k < 2**63
    assert k != advisory_key("orders:43")
    assert k != advisory_key("orders:42", namespace="other")
    keys = {advisory_key(f"n{i}") for i in range(20_000)}
    assert len(keys) == 20_000
    assert any(x < 0 for x in keys) and any(x > 0 for x in keys)  # the whole signed range is used
    for bad in ("", "x" * 513):
        with pytest.raises(ValueError):
            advisory_key(bad)


async def test_session_lock_excludes_and_releases(connect: Callable[[], Awaitable[Conn]], ns: str) -> None:
    a, b = await connect(), await connect()
    la, lb = PgAdvisoryLock(a, "job", namespace=ns), PgAdvisoryLock(b, "job", namespace=ns)
    async with la:
        assert la.held
        assert not await lb.try_acquire()
        with pytest.raises(LockError):  # not re-entrant
            await la.try_acquire()
    assert not la.held
    assert await lb.try_acquire()
    await lb.release()
    with pytest.raises(LockNotOwned):
        await lb.release()


async def test_stranger_release_raises_and_keeps_lock(
    connect: Callable[[], Awaitable[Conn]], ns: str
) -> None:
    a, b = await connect(), await connect()
    holder = PgAdvisoryLock(a, "job", namespace=ns)
    await holder.acquire()
    stranger = PgAdvisoryLock(b, "job", namespace=ns)
    stranger._held = True  # believes it holds it; PostgreSQL knows better
    with pytest.raises(LockNotOwned):
        await stranger.release()
    assert not await PgAdvisoryLock(b, "job", namespace=ns).try_acquire()
    await holder.release()


async def test_blocking_acquire_times_out_server_side(
    connect: Callable[[], Awaitable[Conn]], ns: str
) -> None:
    a, b = await connect(), await connect()
    await PgAdvisoryLock(a, "job", namespace=ns).acquire()
    waiter = PgAdvisoryLock(b, "job", namespace=ns)
    t0 = time.monotonic()
    with pytest.raises(LockAcquireTimeout):
        await waiter.acquire(blocking_timeout=0.3)
    assert 0.25 <= time.monotonic() - t0 < 2
    with pytest.raises(LockAcquireTimeout):
        await waiter.acquire(blocking_timeout=0)
    # The connection is usable and its lock_timeout untouched afterwards.
    cur = await b.execute("SELECT current_setting('lock_timeout')")
    assert (await cur.fetchone()) == ("0",)
    assert not waiter.held


async def test_waiter_gets_lock_when_released(connect: Callable[[], Awaitable[Conn]], ns: str) -> None:
    a, b = await connect(), await connect()
    holder = PgAdvisoryLock(a, "job", namespace=ns)
    await holder.acquire()
    waiter = PgAdvisoryLock(b, "job", namespace=ns)
    task = asyncio.create_task(waiter.acquire(blocking_timeout=5))
    await asyncio.sleep(0.2)
    assert not task.done()
    await holder.release()
    await asyncio.wait_for(task, 5)
    assert waiter.held
    await waiter.release()


async def test_terminating_holder_backend_releases_session_lock(
    connect: Callable[[], Awaitable[Conn]], ns: str
) -> None:
    holder_conn, other, admin = await connect(), await connect(), await connect()
    await PgAdvisoryLock(holder_conn, "job", namespace=ns).acquire()
    contender = PgAdvisoryLock(other, "job", namespace=ns)
    assert not await contender.try_acquire()
    cur = await admin.execute("SELECT pg_terminate_backend(%s)", [holder_conn.info.backend_pid])
    assert (await cur.fetchone()) == (True,)
    await contender.acquire(blocking_timeout=5)  # granted as soon as the backend is gone
    assert contender.held
    await contender.release()


async def test_shared_locks_coexist_and_block_exclusive(
    connect: Callable[[], Awaitable[Conn]], ns: str
) -> None:
    a, b, c = await connect(), await connect(), await connect()
    assert await PgAdvisoryLock(a, "cfg", namespace=ns, shared=True).try_acquire()
    assert await PgAdvisoryLock(b, "cfg", namespace=ns, shared=True).try_acquire()
    assert not await PgAdvisoryLock(c, "cfg", namespace=ns).try_acquire()


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_transaction_lock_released_on_commit_and_rollback(
    connect: Callable[[], Awaitable[Conn]], ns: str, outcome: str
) -> None:
    a, b = await connect(), await connect()

    class Boom(Exception):
        pass

    with pytest.raises(Boom) if outcome == "rollback" else contextlib.nullcontext():
        async with advisory_transaction(a, "tenant", namespace=ns):
            async with b.transaction():
                assert not await try_xact_lock(b, "tenant", namespace=ns)
            if outcome == "rollback":
                raise Boom
    async with b.transaction():
        assert await try_xact_lock(b, "tenant", namespace=ns)


async def test_xact_lock_timeout_keeps_callers_transaction(
    connect: Callable[[], Awaitable[Conn]], ns: str
) -> None:
    a, b = await connect(), await connect()
    async with a.transaction():
        await xact_lock(a, "t", namespace=ns)
        async with b.transaction():
            await b.execute("CREATE TEMP TABLE IF NOT EXISTS h3_probe(x int)")
            with pytest.raises(LockAcquireTimeout):
                await xact_lock(b, "t", namespace=ns, blocking_timeout=0.2)
            await b.execute("INSERT INTO h3_probe VALUES (1)")  # transaction still usable
            cur = await b.execute("SELECT current_setting('lock_timeout')")
            assert (await cur.fetchone()) == ("0",)


async def test_xact_lock_outside_transaction_is_refused(
    connect: Callable[[], Awaitable[Conn]], ns: str
) -> None:
    a = await connect()
    with pytest.raises(LockError):
        await xact_lock(a, "t", namespace=ns)
    with pytest.raises(LockError):
        await try_xact_lock(a, "t", namespace=ns)


async def test_bad_input(connect: Callable[[], Awaitable[Conn]]) -> None:
    a = await connect()
    with pytest.raises(ValueError):
        PgAdvisoryLock(a, "")
    with pytest.raises(ValueError):
        PgAdvisoryLock(a, "job", blocking_timeout=-1)
    with pytest.raises(ValueError):
        await PgAdvisoryLock(a, "job").acquire(blocking_timeout=float("nan"))
