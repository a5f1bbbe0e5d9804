"""``idempotent_execute``: the idempotency protocol for one operation, without HTTP.

::

    async def pay(db, idempotency_key: str, order: dict) -> dict:
        async def process() -> dict:
            return await charge(order)  # runs at most once per key

        return await idempotent_execute(db, idempotency_key, "/payments", process)

A thin convenience over :class:`~.service.IdempotencyService` and the stores: it picks the
store for ``db``, fingerprints the request, runs ``process`` at most once per key and
stores its result as JSON (a :class:`~.model.StoredResponse` with status 200), so a
repeat returns the stored result without calling ``process``.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis.asyncio as aioredis

from edge_kv.core.errors import InvalidInput
from edge_kv.origin._pg import connection_factory

from .fingerprint import fingerprint
from .model import IdempotencyStore, StoredResponse
from .postgres_store import PostgresStore
from .redis_store import RedisStore
from .service import DEFAULT_TTL_S, IdempotencyService

__all__ = ["DEFAULT_TABLE", "idempotent_execute"]

DEFAULT_TABLE = "edge_kv_idempotency_keys"

_METHOD = "EXECUTE"  # the fingerprint's method: never equal to an HTTP request's
_CONTENT_TYPE = "application/json"
_STORE_METHODS = ("begin", "complete", "release", "extend", "get")


@dataclass
class _Prepared:
    store: IdempotencyStore
    ready: asyncio.Event | None = None  # PostgreSQL: set once the table exists
    creating: asyncio.Lock | None = None


# One store per db object (and table), so a pool's schema is created once per process.
_stores: weakref.WeakKeyDictionary[Any, dict[str, _Prepared]] = weakref.WeakKeyDictionary()


def _is_store(db: object) -> bool:
    return all(callable(getattr(db, name, None)) for name in _STORE_METHODS)


def _build(db: object, table: str, redis_prefix: str) -> _Prepared:
    if _is_store(db):
        return _Prepared(cast(IdempotencyStore, db))
    if isinstance(db, (aioredis.Redis, aioredis.RedisCluster)):
        client: Any = db  # Redis or RedisCluster
        return _Prepared(RedisStore(client, prefix=redis_prefix))
    try:
        connect = connection_factory(db)
    except TypeError:
        raise InvalidInput(
            "db must be a redis.asyncio client, a PgPool / psycopg_pool.AsyncConnectionPool, a "
            f"psycopg.AsyncConnection, a connection factory or an idempotency store; got {type(db).__name__}"
        ) from None
    return _Prepared(PostgresStore(connect, table=table), asyncio.Event(), asyncio.Lock())


async def _store_for(db: object, table: str, redis_prefix: str, create_schema: bool) -> IdempotencyStore:
    owner = getattr(db, "__self__", db)  # a bound ``pool.connection`` is keyed by its pool
    cache_key = f"{len(table)}:{table}:{redis_prefix}"
    try:
        per_db = _stores.setdefault(owner, {})
    except TypeError:  # not weak-referenceable: build a fresh one each call
        per_db = {}
    prepared = per_db.get(cache_key)
    if prepared is None:
        prepared = per_db[cache_key] = _build(db, table, redis_prefix)
    if create_schema and prepared.ready is not None and not prepared.ready.is_set():
        assert prepared.creating is not None and isinstance(prepared.store, PostgresStore)
        async with prepared.creating:
            if not prepared.ready.is_set():
                await prepared.store.create_schema()  # CREATE TABLE IF NOT EXISTS
                prepared.ready.set()
    return prepared.store


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


async def idempotent_execute(
    db: object,
    idempotency_key: str,
    request: str,
    process: Callable[[], Awaitable[Any]],
    *,
    payload: Any = None,
    scope: str = "",
    ttl_s: float = DEFAULT_TTL_S,
    lease_s: float = 10.0,
    in_flight: Literal["reject", "wait"] = "reject",
    wait_timeout_s: float = 10.0,
    table: str = DEFAULT_TABLE,
    redis_prefix: str = "edge_kv:idem:",
    create_schema: bool = True,
    dumps: Callable[[Any], bytes] = _dumps,
    loads: Callable[[bytes], Any] = json.loads,
) -> Any:
    """Run ``process`` at most once per ``idempotency_key`` and return its result; a
    repeat with the same key and request returns the stored result without calling it.

    * ``db`` is whatever the idempotency stores work on: a ``redis.asyncio.Redis`` (or
      ``RedisCluster``) client created with ``decode_responses=False`` (a
      :class:`~.redis_store.RedisStore`); a PostgreSQL :class:`~edge_kv.origin._pg.PgPool`,
      ``psycopg_pool.AsyncConnectionPool``, ``psycopg.AsyncConnection`` (lent to one store
      call at a time) or connection factory (a :class:`~.postgres_store.PostgresStore` on
      ``table``, created with ``CREATE TABLE IF NOT EXISTS`` on first use unless
      ``create_schema=False``); or a store itself (``RedisStore``, ``PostgresStore``,
      ``LayeredStore``, any :class:`~.model.IdempotencyStore`).
    * ``request`` names the operation (e.g. the endpoint, ``"/payments"``) and, with
      ``payload`` (any JSON value, compared canonically: key order does not matter), is the
      request the key is bound to: the same key with a different ``request`` or ``payload``
      raises :class:`~.model.FingerprintMismatch` (422) and ``process`` does not run.
    * ``process`` is an async callable taking no arguments; its result is stored for
      ``ttl_s`` seconds as ``dumps(result)`` (JSON by default) and the caller gets
      ``loads`` of it, the first time as on every replay (so a tuple comes back as a list,
      also the first time). If ``process`` raises, nothing is stored, the key is released
      and the exception propagates: a retry with the key runs ``process`` again. A result
      ``dumps`` cannot encode raises after ``process`` ran, and is not stored either.
    * While the first call runs, a concurrent one with the key raises
      :class:`~.model.InFlight` (409; ``in_flight="wait"``: it waits up to
      ``wait_timeout_s`` for the stored result instead). The lease of the running call is
      ``lease_s`` seconds, renewed while it runs.
    * Keys are 1-255 visible ASCII characters (``ValueError`` otherwise), scoped to
      ``scope`` (e.g. the user id: two users never share a key). An unreachable store
      raises :class:`~.model.StoreUnavailable` (503) before ``process`` runs.

    For HTTP endpoints use :class:`~.middleware.IdempotencyMiddleware`; for other options
    :class:`~.service.IdempotencyService`.
    """
    if not isinstance(request, str) or not request:
        raise InvalidInput("request must be a non-empty str naming the operation, e.g. '/payments'")
    try:
        body = b"" if payload is None else _dumps(payload)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"payload must be a JSON value: {exc}") from None
    service = IdempotencyService(
        await _store_for(db, table, redis_prefix, create_schema),
        ttl_s=ttl_s,
        lease_s=lease_s,
        in_flight=in_flight,
        wait_timeout_s=wait_timeout_s,
    )
    fp = fingerprint(_METHOD, request, body, _CONTENT_TYPE)

    async def handler() -> StoredResponse:
        result = await process()
        return StoredResponse(200, (("content-type", _CONTENT_TYPE),), dumps(result))

    outcome = await service.execute(idempotency_key, fp, handler, scope=scope)
    return loads(outcome.response.body)
