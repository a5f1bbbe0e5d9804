"""In-memory doubles of the Workers bindings, for unit tests of edge logic.

They let Durable Object logic, configuration sources and routers run on CPython and on
plain Pyodide without the offline host: :class:`MemoryKV` (TTL, 512-byte keys, list by
prefix), :class:`MemoryStorage` (a Durable Object's ``ctx.storage`` with a real SQLite
database behind ``sql.exec``, key-value ``get``/``put``/``delete`` and an alarm),
:class:`MemoryNamespace` (``idFromName``/``get`` returning stubs that deliver one call at
a time to one instance per name, like the runtime's input gate), :class:`MemoryCache`,
:class:`TestRequest` and :class:`TestResponse`.

They are for unit tests of our own logic. Fidelity (what the real runtime does) is
tested through the offline host and Miniflare, never with these.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_kv.core.errors import InvalidInput
from edge_kv.edge.http import PlainHeaders, PlainResponse
from edge_kv.edge.runtime import check_kv_key

__all__ = [
    "MemoryCache",
    "MemoryEnv",
    "MemoryKV",
    "MemoryNamespace",
    "MemoryStorage",
    "TestHeaders",
    "TestRequest",
    "TestResponse",
]


def _now_s() -> float:
    return time.time()


class MemoryKV:
    """Workers KV in memory: text values, ``expirationTtl`` (>= 60 s) and ``list(prefix=)``.

    ``clock`` returns wall seconds (inject one to test expiry without waiting).
    """

    def __init__(self, clock: Callable[[], float] = _now_s) -> None:
        self.clock = clock
        self._data: dict[str, tuple[str, float | None]] = {}

    def _live(self, key: str) -> tuple[str, float | None] | None:
        entry = self._data.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= self.clock():
            del self._data[key]
            return None
        return entry

    async def get(self, key: str, *args: Any, **kwargs: Any) -> str | None:
        check_kv_key(key)
        entry = self._live(key)
        return None if entry is None else entry[0]

    async def put(
        self, key: str, value: Any, options: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        check_kv_key(key)
        opts = {**(options or {}), **kwargs}
        ttl = opts.get("expirationTtl")
        expires: float | None = None
        if ttl is not None:
            if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 60:
                raise InvalidInput(f"expirationTtl must be an integer >= 60, got {ttl!r}")
            expires = self.clock() + ttl
        self._data[key] = (str(value), expires)

    async def delete(self, key: str) -> None:
        check_kv_key(key)
        self._data.pop(key, None)

    async def list(self, prefix: str = "", **kwargs: Any) -> dict[str, Any]:
        keys = []
        for name in sorted(self._data):
            entry = self._live(name) if name.startswith(prefix) else None
            if entry is not None:
                item: dict[str, Any] = {"name": name}
                if entry[1] is not None:
                    item["expiration"] = int(entry[1])
                keys.append(item)
        return {"keys": keys, "list_complete": True}


class _Cursor:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self._rows = rows

    def toArray(self) -> list[dict[str, Any]]:
        return list(self._rows)

    def one(self) -> dict[str, Any]:
        if len(self._rows) != 1:
            raise InvalidInput(f"expected exactly one row, got {len(self._rows)}")
        return self._rows[0]

    def __iter__(self) -> Any:
        return iter(self._rows)


class MemorySql:
    """``ctx.storage.sql`` over an in-process SQLite database (the engine Durable Objects use)."""

    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:", isolation_level=None)
        self.db.row_factory = sqlite3.Row
        # The database lives as long as this object (a Durable Object's storage has no
        # close either): close it when the object goes, rather than leaving an open
        # connection to the garbage collector (a ResourceWarning from Python 3.13 on).
        weakref.finalize(self, self.db.close)

    def exec(self, query: str, *bindings: Any) -> _Cursor:
        cursor = self.db.execute(query, bindings)
        rows = [dict(r) for r in cursor.fetchall()] if cursor.description else []
        return _Cursor(rows)


class MemoryStorage:
    """A SQLite-backed Durable Object's ``ctx.storage``: ``sql``, key-value and the alarm.

    Key-value values are stored as JSON, so a value that JSON cannot represent raises
    instead of silently changing type.
    """

    def __init__(self) -> None:
        self.sql = MemorySql()
        self._kv: dict[str, str] = {}
        self.alarm_ms: float | None = None

    async def get(self, key: str) -> Any:
        raw = self._kv.get(key)
        return None if raw is None else json.loads(raw)

    async def put(self, key: str, value: Any) -> None:
        try:
            self._kv[key] = json.dumps(value)
        except TypeError as exc:
            raise InvalidInput(f"cannot store {type(value).__name__}: {exc}") from None

    async def delete(self, key: str) -> bool:
        return self._kv.pop(key, None) is not None

    async def getAlarm(self) -> float | None:
        return self.alarm_ms

    async def setAlarm(self, scheduled_ms: float) -> None:
        self.alarm_ms = float(scheduled_ms)

    async def deleteAlarm(self) -> None:
        self.alarm_ms = None


@dataclass
class _ObjectId:
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass
class _Ctx:
    storage: MemoryStorage
    id: _ObjectId


class _Stub:
    """Delivers each call to the instance one at a time (the runtime's input gate)."""

    def __init__(self, namespace: MemoryNamespace, object_id: _ObjectId) -> None:
        self._namespace = namespace
        self._id = object_id

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        async def call(*args: Any) -> Any:
            instance, gate = self._namespace.instance(self._id)
            method = getattr(instance, name)
            async with gate:
                return await method(*args)

        return call


class MemoryNamespace:
    """A Durable Object namespace: one instance of ``factory(ctx, env)`` per name."""

    def __init__(self, factory: Callable[[Any, Any], Any], env: Any = None) -> None:
        self.factory = factory
        self.env = env
        self.instances: dict[str, tuple[Any, asyncio.Lock]] = {}
        self.storages: dict[str, MemoryStorage] = {}

    def idFromName(self, name: str) -> _ObjectId:
        return _ObjectId(name)

    def get(self, object_id: _ObjectId) -> _Stub:
        return _Stub(self, object_id)

    def instance(self, object_id: _ObjectId) -> tuple[Any, asyncio.Lock]:
        found = self.instances.get(object_id.name)
        if found is None:
            storage = self.storages.setdefault(object_id.name, MemoryStorage())
            found = (self.factory(_Ctx(storage, object_id), self.env), asyncio.Lock())
            self.instances[object_id.name] = found
        return found

    def evict(self) -> None:
        """Drop every instance (memory lost), keeping storage: what an eviction does."""
        self.instances.clear()


class MemoryCache:
    """The Cache API in memory: ``put``/``match``/``delete`` by URL, no expiry handling."""

    def __init__(self) -> None:
        self.entries: dict[str, Any] = {}

    async def match(self, request: Any) -> Any:
        return self.entries.get(str(getattr(request, "url", request)))

    async def put(self, request: Any, response: Any) -> None:
        self.entries[str(getattr(request, "url", request))] = response

    async def delete(self, request: Any) -> bool:
        return self.entries.pop(str(getattr(request, "url", request)), None) is not None


class MemoryEnv:
    """A Worker ``env``: bindings and vars as attributes (``MemoryEnv(KV=MemoryKV())``)."""

    def __init__(self, **bindings: Any) -> None:
        self.__dict__.update(bindings)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


# Off the runtime the router builds these; tests read ``status``, ``headers``, ``json()``.
TestHeaders = PlainHeaders
TestResponse = PlainResponse


@dataclass
class TestRequest:
    """A request as the router sees it: ``url``, ``method``, ``headers``, ``text()``, ``cf``."""

    __test__ = False

    url: str
    method: str = "GET"
    headers: TestHeaders = field(default_factory=TestHeaders)
    body: str = ""
    cf: Any = None

    async def text(self) -> str:
        return self.body
