"""The lock Durable Object's logic: one resource per object, state in one SQLite row.

Every call loads the :class:`~edge_kv.edge.locks.state.LockRecord`, applies one pure
operation with the current time, writes the row back (one statement) and arms the
object's alarm for the next moment something expires. The alarm drops an expired lease
and stale waiters, so an abandoned lease frees itself even if nobody asks for the lock
again. ``last_token`` lives in the same row and only grows, so fencing tokens are
strictly increasing per resource for as long as the object's storage exists.

The record is kept in memory after the first read (the object is its only writer;
memory changes only after a write succeeded), so a call that changes nothing costs no
storage operation and one that changes the record costs one statement.

Replies are JSON-able dicts (the shell sends them in the RPC envelope); refusals are
replies, not exceptions, so the Worker can map them to 409 without parsing error text.
Bad arguments raise ``ValueError`` before anything is stored.
"""

from __future__ import annotations

import time
from typing import Any

from edge_kv.core.errors import LockNotOwned
from edge_kv.core.lease import Lease
from edge_kv.edge.locks.state import LockLimits, LockRecord
from edge_kv.edge.runtime import rpc_method, sql_exec, sql_rows

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS edge_kv_lock (id INTEGER PRIMARY KEY CHECK (id = 1), record TEXT NOT NULL)"
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def durable_view(record: LockRecord) -> tuple[object, ...]:
    """What must be stored: the lease state and the queue order (not poll times)."""
    return (record.state, tuple(w.owner for w in record.waiters))


def lease_json(lease: Lease) -> dict[str, Any]:
    return {"owner": lease.owner, "token": lease.token, "expires_at_ms": lease.expires_at_ms}


def _reply(value: dict[str, Any]) -> dict[str, Any]:
    """Replies are plain JSON-able dicts; the Durable Object shell puts them in the RPC
    envelope (:func:`edge_kv.edge.runtime.rpc_method`)."""
    return value


class LockObject:
    """Logic of the ``LockService`` Durable Object over its ``ctx.storage``."""

    def __init__(self, storage: Any, limits: LockLimits) -> None:
        self.storage = storage
        self.limits = limits
        self._ready = False
        self._alarm_ms: int | None = None
        self._record: LockRecord | None = None

    async def load(self) -> LockRecord:
        if self._record is not None:
            return self._record
        if not self._ready:
            await sql_exec(self.storage, SCHEMA)
            self._ready = True
        rows = await sql_rows(self.storage, "SELECT record FROM edge_kv_lock WHERE id = 1")
        self._record = LockRecord.loads(str(rows[0]["record"]) if rows else None)
        return self._record

    async def save(self, before: LockRecord, after: LockRecord) -> None:
        """Persist what must survive a restart; re-arm the alarm only to fire earlier.

        A waiter's poll only refreshes its liveness (``seen_ms``/``deadline_ms``): that
        stays in memory, so polling costs no storage write. After an eviction the stored
        times are older, so a waiter may be dropped and re-queue at the back (documented).
        An alarm that fires earlier than needed just re-arms itself.
        """
        if durable_view(after) != durable_view(before):
            await sql_exec(
                self.storage,
                "INSERT INTO edge_kv_lock (id, record) VALUES (1, ?)"
                " ON CONFLICT(id) DO UPDATE SET record = excluded.record",
                after.dumps(),
            )
        self._record = after
        wake = after.next_wakeup_ms(self.limits)
        if wake is not None and (self._alarm_ms is None or wake < self._alarm_ms):
            await self.storage.setAlarm(wake)
            self._alarm_ms = wake

    async def acquire(self, owner: str, ttl_ms: int, wait_ms: int = 0) -> dict[str, Any]:
        record = await self.load()
        result, after = record.acquire(owner, ttl_ms, now_ms(), self.limits, wait_ms)
        await self.save(record, after)
        out: dict[str, Any] = {
            "acquired": result.lease is not None,
            "position": result.position,
            "holder_expires_at_ms": result.holder_expires_at_ms,
            "reason": result.reason,
        }
        if result.lease is not None:
            out.update(lease_json(result.lease))
        return _reply(out)

    async def leave(self, owner: str) -> dict[str, Any]:
        record = await self.load()
        after = record.leave(owner)
        await self.save(record, after)
        return _reply({"left": after != record})

    async def extend(self, owner: str, ttl_ms: int) -> dict[str, Any]:
        record = await self.load()
        try:
            lease, after = record.extend(owner, ttl_ms, now_ms(), self.limits)
        except LockNotOwned as exc:
            return _reply({"ok": False, "error": "not_owner", "detail": str(exc)})
        await self.save(record, after)
        return _reply({"ok": True, **lease_json(lease)})

    async def release(self, owner: str) -> dict[str, Any]:
        record = await self.load()
        try:
            after = record.release(owner, now_ms())
        except LockNotOwned as exc:
            return _reply({"ok": False, "error": "not_owner", "detail": str(exc)})
        await self.save(record, after)
        return _reply({"ok": True, "token": record.state.last_token})

    async def status(self) -> dict[str, Any]:
        """Public view: no owner token. ``stored_lease`` tells whether a lease (even an
        expired one) is still in storage, i.e. whether the alarm has cleaned it up."""
        record = await self.load()
        now = now_ms()
        holder = record.state.holder(now)
        return _reply(
            {
                "held": holder is not None,
                "token": holder.token if holder else None,
                "expires_at_ms": holder.expires_at_ms if holder else None,
                "last_token": record.state.last_token,
                "waiters": len(record.waiters),
                "stored_lease": record.state.lease is not None,
                "now_ms": now,
            }
        )

    async def alarm(self) -> None:
        record = await self.load()
        self._alarm_ms = None
        after = record.expire(now_ms(), self.limits)
        await self.save(record, after)


class LockServiceRpc:
    """The RPC surface of the ``LockService`` Durable Object, without the runtime's base
    class: :class:`edge_kv.edge.objects.LockService` adds ``DurableObject``; unit tests use
    this with :class:`edge_kv.edge.testing.MemoryNamespace`."""

    def __init__(self, ctx: Any, env: Any) -> None:
        from edge_kv.edge.locks.settings import lock_limits

        self.logic = LockObject(ctx.storage, lock_limits(env))

    @rpc_method
    async def acquire(self, owner: str, ttl_ms: int, wait_ms: int = 0) -> Any:
        return await self.logic.acquire(owner, ttl_ms, wait_ms)

    @rpc_method
    async def leave(self, owner: str) -> Any:
        return await self.logic.leave(owner)

    @rpc_method
    async def extend(self, owner: str, ttl_ms: int) -> Any:
        return await self.logic.extend(owner, ttl_ms)

    @rpc_method
    async def release(self, owner: str) -> Any:
        return await self.logic.release(owner)

    @rpc_method
    async def status(self) -> Any:
        return await self.logic.status()

    async def alarm(self, alarm_info: Any = None) -> None:
        await self.logic.alarm()
