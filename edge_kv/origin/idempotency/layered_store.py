"""Redis in front, PostgreSQL authoritative.

* Replays are served from Redis when it has the done record (one round trip, no SQL).
* Every claim, completion and release goes to PostgreSQL, whose unique key decides who
  executes; Redis only ever receives done records PostgreSQL already holds (written
  after the PostgreSQL commit, with the same remaining TTL), so Redis can lose anything
  - FLUSHALL, restart, failover - without a replay being lost or a request running twice.
* Redis errors are logged and skipped (PostgreSQL alone still answers correctly);
  PostgreSQL errors raise :class:`~.model.StoreUnavailable`.
"""

from __future__ import annotations

import logging

from .model import BeginResult, Record, StoredResponse, StoreUnavailable
from .postgres_store import PostgresStore
from .redis_store import RedisStore

log = logging.getLogger(__name__)


class LayeredStore:
    """:class:`~.model.IdempotencyStore` combining a :class:`RedisStore` cache and a
    :class:`PostgresStore` of record. Use distinct Redis prefixes for a layered cache
    and a standalone Redis store on the same server."""

    def __init__(self, redis: RedisStore, postgres: PostgresStore) -> None:
        self.redis = redis
        self.postgres = postgres

    async def _cached(self, key: str) -> Record | None:
        try:
            rec = await self.redis.get(key)
        except StoreUnavailable as exc:
            log.warning("idempotency: redis cache unavailable, using postgres only: %s", exc)
            return None
        return rec if rec is not None and rec.done else None

    async def _fill(self, key: str, record: Record) -> None:
        if record.response is None:
            return
        try:
            await self.redis.put_done(key, record.fingerprint, record.response, record.expires_in_ms)
        except StoreUnavailable as exc:
            log.warning("idempotency: could not fill redis cache: %s", exc)

    async def begin(self, key: str, fingerprint: str, token: str, lease_ms: int) -> BeginResult:
        cached = await self._cached(key)
        if cached is not None:
            return BeginResult(acquired=False, record=cached)
        result = await self.postgres.begin(key, fingerprint, token, lease_ms)
        if result.record is not None and result.record.done:
            await self._fill(key, result.record)
        return result

    async def get(self, key: str) -> Record | None:
        cached = await self._cached(key)
        if cached is not None:
            return cached
        rec = await self.postgres.get(key)
        if rec is not None and rec.done:
            await self._fill(key, rec)
        return rec

    async def complete(self, key: str, token: str, response: StoredResponse, ttl_ms: int) -> bool:
        rec = await self.postgres.complete_record(key, token, response, ttl_ms)
        if rec is None:
            return False
        await self._fill(key, rec)
        return True

    async def release(self, key: str, token: str) -> bool:
        return await self.postgres.release(key, token)

    async def extend(self, key: str, token: str, lease_ms: int) -> bool:
        return await self.postgres.extend(key, token, lease_ms)
