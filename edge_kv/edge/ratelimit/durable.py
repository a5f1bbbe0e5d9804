"""The rate-limit Durable Object's logic: one SQLite row per key, one decision per call.

Why it is exact: a Durable Object is a single instance worldwide that handles one
event at a time, and a decision is "read the key's row, run ``decide_stored``, write
the row" with no other event able to run between the read and the write (``sql.exec``
is synchronous in the object; the host's input gate serialises events too). The write
is one ``INSERT ... ON CONFLICT`` statement, so all tiers of the key change together.

Rows carry ``expires_us`` (when the state equals a fresh bucket); the object's alarm
deletes expired rows so idle keys cost no storage.

The object is the only writer of its storage, so it keeps what it read or wrote in
memory (bounded, write-through: memory changes only after the write succeeded) and a
decision costs one SQL statement when admitted and none when refused. A fresh instance
(after eviction or a restart) reads from storage again.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import Any

from edge_kv.core.errors import InvalidInput
from edge_kv.core.validate import check_cost, check_key
from edge_kv.edge.ratelimit.config import parse_limit
from edge_kv.edge.ratelimit.state import decide_stored, decision_to_json, dumps, loads
from edge_kv.edge.runtime import rpc_method, sql_exec, sql_rows

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS edge_kv_ratelimit ("
    " key TEXT PRIMARY KEY, state TEXT NOT NULL, expires_us INTEGER NOT NULL)"
)


MEMORY_ROWS = 4096


class ExplicitClockRefused(InvalidInput):
    """An explicit ``now_us`` was passed but the test clock is not enabled."""


def real_now_us() -> int:
    return time.time_ns() // 1000


class RateLimitObject:
    """Logic of the ``RateLimiter`` Durable Object over its ``ctx.storage``.

    The DO class in ``src/`` owns an instance and forwards its RPC methods here.
    ``test_clock`` allows callers to pass ``now_us`` (conformance vectors); production
    configuration leaves it off and such calls raise :class:`ExplicitClockRefused`.
    """

    def __init__(self, storage: Any, *, test_clock: bool = False) -> None:
        self.storage = storage
        self.test_clock = test_clock
        self._ready = False
        self._alarm_ms: int | None = None
        self._rows: OrderedDict[str, str | None] = OrderedDict()

    async def _load(self, key: str) -> str | None:
        if key in self._rows:
            self._rows.move_to_end(key)
            return self._rows[key]
        rows = await sql_rows(self.storage, "SELECT state FROM edge_kv_ratelimit WHERE key = ?", key)
        text = str(rows[0]["state"]) if rows else None
        self._remember(key, text)
        return text

    def _remember(self, key: str, text: str | None) -> None:
        self._rows[key] = text
        self._rows.move_to_end(key)
        while len(self._rows) > MEMORY_ROWS:
            self._rows.popitem(last=False)

    async def _init(self) -> None:
        if not self._ready:
            await sql_exec(self.storage, SCHEMA)
            self._ready = True

    def _now(self, now_us: int | None) -> int:
        if now_us is None:
            return real_now_us()
        if not self.test_clock:
            raise ExplicitClockRefused("now_us is accepted only when EDGE_KV_TEST_CLOCK is enabled")
        if isinstance(now_us, bool) or not isinstance(now_us, int) or not 0 <= now_us < 2**52:
            raise InvalidInput(f"now_us must be an integer in [0, 2**52), got {now_us!r}")
        return now_us

    async def decide(self, spec_json: str, key: str, cost: int, now_us: int | None = None) -> dict[str, Any]:
        """Decide ``cost`` units for ``key`` under the limit ``spec_json``.

        Raises ``InvalidInput`` (bad spec, key or cost) before touching storage.
        """
        try:
            raw_spec = json.loads(spec_json)
        except (TypeError, ValueError):
            raise InvalidInput("spec must be the JSON of a limit") from None
        spec = parse_limit("rpc", raw_spec, "spec")
        check_key(key)
        for tier in spec.tiers:
            check_cost(cost, tier.limit)
        now = self._now(now_us)
        await self._init()
        outcome = decide_stored(spec.tiers, loads(await self._load(key)), now, cost)
        if outcome.stored is not None:
            text = dumps(outcome.stored)
            await sql_exec(
                self.storage,
                "INSERT INTO edge_kv_ratelimit (key, state, expires_us) VALUES (?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET state = excluded.state, expires_us = excluded.expires_us",
                key,
                text,
                outcome.expires_us,
            )
            self._remember(key, text)
            if now_us is None:  # rows written at an explicit test time are not real expiries
                await self._arm(outcome.expires_us // 1000 + 1)
        return {
            "decision": decision_to_json(outcome.decision),
            "decisions": [decision_to_json(d) for d in outcome.decisions],
            "now_us": now,
        }

    async def state(self, key: str) -> str | None:
        """The stored JSON of ``key`` (for tests and operators), ``None`` if none."""
        await self._init()
        rows = await sql_rows(self.storage, "SELECT state FROM edge_kv_ratelimit WHERE key = ?", key)
        return str(rows[0]["state"]) if rows else None

    async def _arm(self, at_ms: int) -> None:
        if self._alarm_ms is not None and self._alarm_ms <= at_ms:
            return
        await self.storage.setAlarm(at_ms)
        self._alarm_ms = at_ms

    async def alarm(self) -> None:
        """Delete expired rows; re-arm for the next expiry if rows remain."""
        await self._init()
        self._alarm_ms = None
        now = real_now_us()
        self._rows.clear()
        await sql_exec(self.storage, "DELETE FROM edge_kv_ratelimit WHERE expires_us <= ?", now)
        rows = await sql_rows(self.storage, "SELECT MIN(expires_us) AS next FROM edge_kv_ratelimit")
        nxt = rows[0]["next"] if rows else None
        if nxt is not None:
            await self._arm(int(nxt) // 1000 + 1)


class RateLimiterRpc:
    """The RPC surface of the ``RateLimiter`` Durable Object, without the runtime's base
    class: :class:`edge_kv.edge.objects.RateLimiter` adds ``DurableObject``; unit tests use
    this with :class:`edge_kv.edge.testing.MemoryNamespace`."""

    def __init__(self, ctx: Any, env: Any) -> None:
        from edge_kv.edge.env import env_flag

        self.logic = RateLimitObject(ctx.storage, test_clock=env_flag(env, "EDGE_KV_TEST_CLOCK"))

    @rpc_method
    async def decide(self, spec_json: str, key: str, cost: int, now_us: int | None = None) -> Any:
        return await self.logic.decide(spec_json, key, cost, now_us)

    @rpc_method
    async def state(self, key: str) -> Any:
        return await self.logic.state(key)

    async def alarm(self, alarm_info: Any = None) -> None:
        await self.logic.alarm()
