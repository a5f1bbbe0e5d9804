"""Typed shapes of the Workers runtime objects edge_kv uses.

These are structural (``typing.Protocol``): the runtime's own objects (the SDK's wrappers
over JavaScript bindings), Miniflare's through the offline host, and the in-memory doubles
of :mod:`edge_kv.edge.testing` all satisfy them. Only the methods edge_kv calls are listed.
"""

from __future__ import annotations

from typing import Any, Protocol


class KVNamespace(Protocol):
    """A Workers KV binding (``env.KV``)."""

    async def get(self, key: str, /, *args: Any, **kwargs: Any) -> Any: ...
    async def put(self, key: str, value: Any, /, *args: Any, **kwargs: Any) -> Any: ...
    async def delete(self, key: str, /) -> Any: ...
    async def list(self, *args: Any, **kwargs: Any) -> Any: ...


class DurableObjectId(Protocol):
    def __str__(self) -> str: ...


class DurableObjectStub(Protocol):
    """A stub: RPC methods are attributes; ``fetch`` sends an HTTP request to the object."""

    def __getattr__(self, name: str) -> Any: ...


class DurableObjectNamespace(Protocol):
    """A Durable Object namespace binding (``env.RATE_LIMITER``)."""

    def idFromName(self, name: str) -> Any: ...
    def get(self, object_id: Any) -> Any: ...


class SqlCursor(Protocol):
    def toArray(self) -> Any: ...


class SqlStorage(Protocol):
    """``ctx.storage.sql``: synchronous at the edge, returns a cursor."""

    def exec(self, query: str, /, *bindings: Any) -> Any: ...


class DurableObjectStorage(Protocol):
    """``ctx.storage`` of a SQLite-backed Durable Object."""

    sql: SqlStorage

    async def get(self, key: str, /) -> Any: ...
    async def put(self, key: str, value: Any, /) -> Any: ...
    async def delete(self, key: str, /) -> Any: ...
    async def getAlarm(self) -> Any: ...
    async def setAlarm(self, scheduled_ms: float, /) -> Any: ...
    async def deleteAlarm(self) -> Any: ...


class Cache(Protocol):
    """One Cache API cache (``caches.default`` or ``await caches.open(name)``)."""

    async def match(self, request: Any, /) -> Any: ...
    async def put(self, request: Any, response: Any, /) -> Any: ...
    async def delete(self, request: Any, /) -> Any: ...


class Env(Protocol):
    """The Worker's ``env``: bindings and vars are attributes (``env.KV``, ``env.EDGE_KV_ENV``)."""

    def __getattr__(self, name: str) -> Any: ...
