"""The Redis idempotency store and the Redis de-duplicator never wait longer than their
``timeout``: a frozen (SIGSTOP) redis-server gives ``StoreUnavailable`` (an
``Unavailable``) in bounded time, and the store works again once Redis is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from edge_kv.core.errors import Unavailable
from edge_kv.origin.idempotency import RedisDeduplicator, RedisStore, StoredResponse, StoreUnavailable
from edge_kv.origin.testing import RedisServer


async def test_frozen_redis_is_bounded_by_the_timeout(
    redis_servers: Callable[[int], list[RedisServer]],
) -> None:
    (server,) = redis_servers(1)
    client = aioredis.Redis(host="127.0.0.1", port=server.port)
    store = RedisStore(client, timeout=0.3)
    dedup = RedisDeduplicator(client, timeout=0.3)
    try:
        assert (await store.begin("k", "fp", "tok", 5000)).acquired
        server.pause()
        for call in (
            store.begin("k2", "fp", "tok", 5000),
            store.get("k"),
            store.complete("k", "tok", StoredResponse(200), 5000),
            store.extend("k", "tok", 5000),
            store.release("k", "tok"),
            store.put_done("k3", "fp", StoredResponse(200), 5000),
            dedup.seen("m"),
            dedup.forget("m"),
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as info:
                await asyncio.wait_for(call, 5)  # the guard only matters before the fix
            assert isinstance(info.value, Unavailable)
            assert 0.25 <= time.monotonic() - started < 0.3 + 0.1
        server.resume()
        assert await store.complete("k", "tok", StoredResponse(201, body=b"ok"), 5000)
        record = await store.get("k")
        assert record is not None and record.response == StoredResponse(201, body=b"ok")
        assert not await dedup.seen("m")
    finally:
        server.resume()
        await client.aclose()


def test_bad_timeouts(redis: aioredis.Redis) -> None:
    for bad in (0, -1, float("inf"), "1", True):
        with pytest.raises(ValueError):
            RedisStore(redis, timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            RedisDeduplicator(redis, timeout=bad)  # type: ignore[arg-type]
