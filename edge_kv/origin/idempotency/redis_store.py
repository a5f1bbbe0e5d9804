"""Idempotency records in Redis: one hash per scoped key, every transition one Lua script.

Fields: ``s`` state (``p`` in flight, ``d`` done), ``fp`` fingerprint, ``t`` owner token
(in flight only), ``st``/``h``/``b`` status, headers JSON and body (done only). The key's
own PTTL is the lease (in flight) or the retention TTL (done), so a crashed request's
mark disappears by itself. Fast, but not durable: pair it with
:class:`~.postgres_store.PostgresStore` through :class:`~.layered_store.LayeredStore`
when losing Redis must not lose stored responses.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

from edge_kv.origin import _redis
from edge_kv.origin._scripts import ArgT, LuaScript

from .codec import decode_headers, encode_headers
from .model import BeginResult, Record, StoredResponse, StoreUnavailable

DEFAULT_TIMEOUT_S = 1.0

_PACKAGE = "edge_kv.origin.idempotency"
_BEGIN = LuaScript.from_package(_PACKAGE, "idem_begin.lua")
_GET = LuaScript.from_package(_PACKAGE, "idem_get.lua")
_COMPLETE = LuaScript.from_package(_PACKAGE, "idem_complete.lua")
_RELEASE = LuaScript.from_package(_PACKAGE, "idem_release.lua")
_EXTEND = LuaScript.from_package(_PACKAGE, "idem_extend.lua")
_PUT_DONE = LuaScript.from_package(_PACKAGE, "idem_put_done.lua")


def _s(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _record(fields: list[Any]) -> Record:
    state, fp, status, headers, body, pttl = fields
    response = None
    if _s(state) == "d":
        response = StoredResponse(
            status=int(_s(status)),
            headers=decode_headers(headers if headers else None),
            body=body if isinstance(body, bytes) else _s(body).encode("utf-8"),
        )
    return Record(fingerprint=_s(fp), response=response, expires_in_ms=max(int(pttl), 0))


class RedisStore:
    """:class:`~.model.IdempotencyStore` on Redis: a ``redis.asyncio.Redis`` or
    ``redis.asyncio.cluster.RedisCluster`` client created with ``decode_responses=False``
    (bodies are bytes). Every script touches one key, so a cluster needs no hash tags.

    Every call is bounded by ``timeout`` seconds and a refused connection fails at once;
    both, like any Redis error, raise :class:`~.model.StoreUnavailable`.
    """

    def __init__(
        self, redis: Any, *, prefix: str = "edge_kv:idem:", timeout: float = DEFAULT_TIMEOUT_S
    ) -> None:
        if redis.get_connection_kwargs().get("decode_responses"):
            raise ValueError("RedisStore needs a client with decode_responses=False (bodies are bytes)")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout < float("inf")
        ):
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        self.redis = _redis.prepare(redis)
        self.prefix = prefix
        self.timeout = float(timeout)

    def _k(self, key: str) -> str:
        return self.prefix + key

    async def _run(self, sc: LuaScript, key: str, args: list[ArgT]) -> Any:
        try:
            return await _redis.run_script(
                sc, self.redis, [self._k(key)], args, self.timeout, f"idempotency {sc.name}", StoreUnavailable
            )
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def begin(self, key: str, fingerprint: str, token: str, lease_ms: int) -> BeginResult:
        out = await self._run(_BEGIN, key, [fingerprint, token, lease_ms])
        if int(out[0]) == 1:
            return BeginResult(acquired=True)
        return BeginResult(acquired=False, record=_record(out[1:]))

    async def get(self, key: str) -> Record | None:
        out = await self._run(_GET, key, [])
        return _record(out[1:]) if int(out[0]) == 1 else None

    async def complete(self, key: str, token: str, response: StoredResponse, ttl_ms: int) -> bool:
        args: list[ArgT] = [
            token,
            response.status,
            encode_headers(response.headers),
            response.body,
            ttl_ms,
        ]
        return int(await self._run(_COMPLETE, key, args)) == 1

    async def release(self, key: str, token: str) -> bool:
        return int(await self._run(_RELEASE, key, [token])) == 1

    async def extend(self, key: str, token: str, lease_ms: int) -> bool:
        return int(await self._run(_EXTEND, key, [token, lease_ms])) == 1

    async def put_done(self, key: str, fingerprint: str, response: StoredResponse, ttl_ms: int) -> None:
        """Write a done record unconditionally (the layered store's cache fill)."""
        if ttl_ms <= 0:
            return
        args: list[ArgT] = [
            fingerprint,
            response.status,
            encode_headers(response.headers),
            response.body,
            ttl_ms,
        ]
        await self._run(_PUT_DONE, key, args)
