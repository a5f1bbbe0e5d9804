"""PostgreSQL advisory locks (psycopg 3, asyncio) under string names.

Names map to PostgreSQL's signed 64-bit advisory key space with :func:`advisory_key`:
the first 8 bytes of BLAKE2b over ``namespace + "\\0" + name``, read as a big-endian
signed int64. Distinct names collide with probability about ``n**2 / 2**65`` for ``n``
names in use (one in ~3.7e10 for a million names); the namespace keeps this library's
keys apart from other code that picks its own integers.

Two scopes, as PostgreSQL has them:

* session level (:class:`PgAdvisoryLock`): held until released or until the session
  ends — a crashed or terminated holder's backend lets go at once, no TTL needed.
  Not rolled back with a transaction.
* transaction level (:func:`xact_lock`, :func:`try_xact_lock`): released by COMMIT or
  ROLLBACK, never explicitly.

Blocking variants wait at most ``blocking_timeout`` seconds, enforced by the server
through a transaction-local ``lock_timeout`` (a waiter does not poll), then raise
:class:`LockAcquireTimeout`. A lost connection raises :class:`LockUnavailable`.
PostgreSQL advisory locks carry no fencing token; guard external writes with
:mod:`edge_kv.origin.locks.fencing` or in-database constraints.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from edge_kv.core.validate import check_key
from edge_kv.origin.locks.errors import LockAcquireTimeout, LockError, LockNotOwned, LockUnavailable

DEFAULT_PG_NAMESPACE = "edge_kv"
DEFAULT_PG_BLOCKING_TIMEOUT_S = 10.0

AsyncConn = psycopg.AsyncConnection[Any]


def advisory_key(name: str, *, namespace: str = DEFAULT_PG_NAMESPACE) -> int:
    """The signed int64 advisory key of ``name`` in ``namespace`` (stable across versions)."""
    check_key(name)
    check_key(namespace)
    digest = hashlib.blake2b(f"{namespace}\0{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _check_wait(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"blocking_timeout must be None or a finite number >= 0, got {value!r}")
    return float(value)


def _fn(kind: str, shared: bool) -> str:
    # Whitelisted function names only: never built from user input.
    return f"pg_{kind}{'_shared' if shared else ''}"


async def _scalar(conn: AsyncConn, sql: str, params: list[Any]) -> Any:
    try:
        cur = await conn.execute(sql, params)  # sql: whitelisted literals only
        row = await cur.fetchone()
    except pg_errors.LockNotAvailable:
        raise
    except psycopg.OperationalError as exc:
        raise LockUnavailable(f"PostgreSQL unreachable: {exc}") from exc
    return None if row is None else row[0]


async def _blocking(conn: AsyncConn, fn: str, key: int, wait: float | None, what: str) -> None:
    """Run blocking ``fn(key)`` under a transaction-local lock_timeout of ``wait`` seconds."""
    try:
        async with conn.transaction():
            prev = None
            if wait is not None:
                prev = await _scalar(conn, "SELECT current_setting('lock_timeout')", [])
                ms = max(1, math.ceil(wait * 1000))
                await _scalar(conn, "SELECT set_config('lock_timeout', %s, true)", [f"{ms}ms"])
            await _scalar(conn, f"SELECT {fn}(%s)", [key])
            if prev is not None:
                await _scalar(conn, "SELECT set_config('lock_timeout', %s, true)", [prev])
    except pg_errors.LockNotAvailable as exc:
        raise LockAcquireTimeout(f"{what} still held by another session after {wait}s") from exc
    except psycopg.OperationalError as exc:
        raise LockUnavailable(f"PostgreSQL unreachable: {exc}") from exc


class PgAdvisoryLock:
    """A session-level advisory lock on ``name`` held through ``conn``.

    ``async with PgAdvisoryLock(conn, "nightly-report"): ...`` One object holds the lock
    at most once (PostgreSQL itself would stack re-acquisitions; we refuse them to keep
    release simple). ``shared=True`` takes the shared variant (many shared holders, no
    exclusive one).
    """

    def __init__(
        self,
        conn: AsyncConn,
        name: str,
        *,
        namespace: str = DEFAULT_PG_NAMESPACE,
        shared: bool = False,
        blocking_timeout: float | None = DEFAULT_PG_BLOCKING_TIMEOUT_S,
    ) -> None:
        self.conn = conn
        self.name = name
        self.key = advisory_key(name, namespace=namespace)
        self.shared = bool(shared)
        self.blocking_timeout = _check_wait(blocking_timeout)
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def _check_free(self) -> None:
        if self._held:
            raise LockError(f"this PgAdvisoryLock already holds {self.name!r}; it is not re-entrant")

    async def try_acquire(self) -> bool:
        """One non-blocking attempt (``pg_try_advisory_lock``)."""
        self._check_free()
        got = await _scalar(self.conn, f"SELECT {_fn('try_advisory_lock', self.shared)}(%s)", [self.key])
        self._held = bool(got)
        return self._held

    async def acquire(self, *, blocking_timeout: object = ...) -> None:
        """Wait for the lock up to ``blocking_timeout`` seconds (default: the constructor's;
        ``None`` forever; ``0`` one try). Raises :class:`LockAcquireTimeout`."""
        self._check_free()
        wait = self.blocking_timeout if blocking_timeout is ... else _check_wait(blocking_timeout)
        if wait == 0:
            if not await self.try_acquire():
                raise LockAcquireTimeout(f"advisory lock {self.name!r} is held by another session")
            return
        await _blocking(
            self.conn, _fn("advisory_lock", self.shared), self.key, wait, f"advisory lock {self.name!r}"
        )
        self._held = True

    async def release(self) -> None:
        """Release; raises :class:`LockNotOwned` if this session did not hold it."""
        if not self._held:
            raise LockNotOwned(f"advisory lock {self.name!r} is not held by this object")
        self._held = False
        ok = await _scalar(self.conn, f"SELECT {_fn('advisory_unlock', self.shared)}(%s)", [self.key])
        if not ok:
            raise LockNotOwned(f"advisory lock {self.name!r} was not held by this session")

    async def __aenter__(self) -> PgAdvisoryLock:
        await self.acquire()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.release()
        except LockError:
            if et is None:
                raise


def _check_in_transaction(conn: AsyncConn) -> None:
    if conn.autocommit and conn.info.transaction_status != TransactionStatus.INTRANS:
        raise LockError(
            "transaction-level advisory locks need an open transaction "
            "(use `async with conn.transaction():`); in autocommit they would end with the statement"
        )


async def xact_lock(
    conn: AsyncConn,
    name: str,
    *,
    namespace: str = DEFAULT_PG_NAMESPACE,
    shared: bool = False,
    blocking_timeout: float | None = DEFAULT_PG_BLOCKING_TIMEOUT_S,
) -> None:
    """Take a transaction-level lock in ``conn``'s current transaction (released by its
    COMMIT or ROLLBACK). Raises :class:`LockAcquireTimeout` after ``blocking_timeout``.
    A timeout rolls back only an internal savepoint: the caller's transaction goes on."""
    key = advisory_key(name, namespace=namespace)
    wait = _check_wait(blocking_timeout)
    _check_in_transaction(conn)
    if wait == 0:
        if not await try_xact_lock(conn, name, namespace=namespace, shared=shared):
            raise LockAcquireTimeout(f"advisory lock {name!r} is held by another session")
        return
    await _blocking(conn, _fn("advisory_xact_lock", shared), key, wait, f"advisory lock {name!r}")


async def try_xact_lock(
    conn: AsyncConn, name: str, *, namespace: str = DEFAULT_PG_NAMESPACE, shared: bool = False
) -> bool:
    """Non-blocking :func:`xact_lock`: ``True`` if taken for the rest of the transaction."""
    key = advisory_key(name, namespace=namespace)
    _check_in_transaction(conn)
    return bool(await _scalar(conn, f"SELECT {_fn('try_advisory_xact_lock', shared)}(%s)", [key]))


@asynccontextmanager
async def advisory_transaction(
    conn: AsyncConn,
    name: str,
    *,
    namespace: str = DEFAULT_PG_NAMESPACE,
    shared: bool = False,
    blocking_timeout: float | None = DEFAULT_PG_BLOCKING_TIMEOUT_S,
) -> AsyncIterator[AsyncConn]:
    """``async with advisory_transaction(conn, "tenant:9"):`` — a transaction holding a
    transaction-level lock on ``name``; commit on success, rollback on error, lock gone either way."""
    async with conn.transaction():
        await xact_lock(conn, name, namespace=namespace, shared=shared, blocking_timeout=blocking_timeout)
        yield conn
