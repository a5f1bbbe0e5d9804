"""``Counter``: the reference Durable Object proving storage, RPC, fetch and alarms work.

``increment`` genuinely awaits storage between its read and its write, so its result is only
exact because the runtime delivers one event at a time to an object (the input gate): 200
concurrent increments end at exactly 200. The host test suite proves the same load loses
updates when the host's gate is switched off.
"""

from __future__ import annotations

from typing import Any

from workers import DurableObject

from edge_kv.core.errors import InvalidInput
from edge_kv.core.validate import check_int_range, check_positive_int
from edge_kv.edge import json_response
from edge_kv.edge.runtime import rpc_method

# Alarms are JavaScript dates: far-future ones are refused by the runtime.
MAX_ALARM_DELAY_MS = 365 * 86_400_000


class Counter(DurableObject):  # type: ignore[no-untyped-call]  # SDK __init_subclass__ is untyped
    @rpc_method
    async def increment(self, by: object = 1) -> int:
        """Add ``by`` (a positive int) and return the new value."""
        amount = check_positive_int("by", by)
        current = await self.ctx.storage.get("count") or 0
        value = int(current) + amount
        await self.ctx.storage.put("count", value)
        return value

    @rpc_method
    async def value(self) -> int:
        return int(await self.ctx.storage.get("count") or 0)

    @rpc_method
    async def schedule_alarm(self, delay_ms: object) -> float:
        """Set the alarm ``delay_ms`` from now; returns the scheduled time (ms since the epoch)."""
        import js

        delay = check_int_range("delay_ms", delay_ms, 1, MAX_ALARM_DELAY_MS)
        when = float(js.Date.now()) + delay
        await self.ctx.storage.setAlarm(when)
        return when

    @rpc_method
    async def alarm_state(self) -> dict[str, Any]:
        fired = int(await self.ctx.storage.get("alarms_fired") or 0)
        pending = await self.ctx.storage.getAlarm()
        return {"fired": fired, "pending": pending}

    async def alarm(self, alarm_info: Any = None) -> None:
        fired = int(await self.ctx.storage.get("alarms_fired") or 0)
        await self.ctx.storage.put("alarms_fired", fired + 1)

    @rpc_method
    async def sql_roundtrip(self, text: object) -> list[dict[str, Any]]:
        """Insert ``text`` into a SQL table and return every row (exercises ``sql.exec``)."""
        if not isinstance(text, str):
            raise InvalidInput(f"text must be a str, got {type(text).__name__}")
        sql = self.ctx.storage.sql
        sql.exec("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
        sql.exec("INSERT INTO notes (text) VALUES (?)", text)
        return [dict(row) for row in sql.exec("SELECT id, text FROM notes ORDER BY id").toArray()]

    async def fetch(self, request: Any) -> Any:
        value = int(await self.ctx.storage.get("count") or 0)
        return json_response({"value": value, "id": str(self.ctx.id)})
