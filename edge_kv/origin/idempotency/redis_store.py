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

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .codec import decode_headers, encode_headers
from .model import BeginResult, Record, StoredResponse, StoreUnavailable

_BEGIN = """
local rec = redis.call('HMGET', KEYS[1], 's', 'fp', 'st', 'h', 'b')
if rec[1] then
  return {0, rec[1], rec[2] or '', rec[3] or '', rec[4] or '', rec[5] or '', redis.call('PTTL', KEYS[1])}
end
redis.call('HSET', KEYS[1], 's', 'p', 'fp', ARGV[1], 't', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1}
"""

_GET = """
local rec = redis.call('HMGET', KEYS[1], 's', 'fp', 'st', 'h', 'b')
if not rec[1] then return {0} end
return {1, rec[1], rec[2] or '', rec[3] or '', rec[4] or '', rec[5] or '', redis.call('PTTL', KEYS[1])}
"""

_COMPLETE = """
if redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 't')
redis.call('HSET', KEYS[1], 's', 'd', 'st', ARGV[2], 'h', ARGV[3], 'b', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

_RELEASE = """
if redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

_EXTEND = """
if redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_PUT_DONE = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 's', 'd', 'fp', ARGV[1], 'st', ARGV[2], 'h', ARGV[3], 'b', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


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
    """:class:`~.model.IdempotencyStore` on one Redis (``redis.asyncio.Redis`` created with
    ``decode_responses=False``: bodies are bytes)."""

    def __init__(self, redis: aioredis.Redis, *, prefix: str = "edge_kv:idem:") -> None:
        if redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("RedisStore needs a client with decode_responses=False (bodies are bytes)")
        self.redis = redis
        self.prefix = prefix
        self._begin = redis.register_script(_BEGIN)
        self._get = redis.register_script(_GET)
        self._complete = redis.register_script(_COMPLETE)
        self._release = redis.register_script(_RELEASE)
        self._extend = redis.register_script(_EXTEND)
        self._put_done = redis.register_script(_PUT_DONE)

    def _k(self, key: str) -> str:
        return self.prefix + key

    async def begin(self, key: str, fingerprint: str, token: str, lease_ms: int) -> BeginResult:
        try:
            out = await self._begin(keys=[self._k(key)], args=[fingerprint, token, lease_ms])
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        if int(out[0]) == 1:
            return BeginResult(acquired=True)
        return BeginResult(acquired=False, record=_record(out[1:]))

    async def get(self, key: str) -> Record | None:
        try:
            out = await self._get(keys=[self._k(key)])
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return _record(out[1:]) if int(out[0]) == 1 else None

    async def complete(self, key: str, token: str, response: StoredResponse, ttl_ms: int) -> bool:
        args: list[str | int | bytes] = [
            token,
            response.status,
            encode_headers(response.headers),
            response.body,
            ttl_ms,
        ]
        try:
            return int(await self._complete(keys=[self._k(key)], args=args)) == 1
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def release(self, key: str, token: str) -> bool:
        try:
            return int(await self._release(keys=[self._k(key)], args=[token])) == 1
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def extend(self, key: str, token: str, lease_ms: int) -> bool:
        try:
            return int(await self._extend(keys=[self._k(key)], args=[token, lease_ms])) == 1
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def put_done(self, key: str, fingerprint: str, response: StoredResponse, ttl_ms: int) -> None:
        """Write a done record unconditionally (the layered store's cache fill)."""
        if ttl_ms <= 0:
            return
        args: list[str | int | bytes] = [
            fingerprint,
            response.status,
            encode_headers(response.headers),
            response.body,
            ttl_ms,
        ]
        try:
            await self._put_done(keys=[self._k(key)], args=args)
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
