"""Fenced writes against a real redis-server: stale tokens refused, nothing written."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from edge_kv.origin.locks import FencedStore, LockUnavailable, StaleFencingToken, fenced_write
from edge_kv.origin.testing import RedisServer


async def test_accepts_equal_and_higher_refuses_lower(redis: aioredis.Redis) -> None:
    store = FencedStore(redis)
    assert await store.highest("r") is None
    r = await store.set("r", 5, "data", "a")
    assert r.highest == 5
    await store.set("r", 5, "data", "b")  # same holder writes again
    assert await redis.get("data") == b"b"
    await store.set("r", 7, "data", "c")  # a newer holder
    with pytest.raises(StaleFencingToken) as info:
        await store.set("r", 6, "data", "stale")
    assert info.value.token == 6 and info.value.highest == 7
    assert await redis.get("data") == b"c"
    assert await store.highest("r") == 7


async def test_incrby_rpush_delete_and_observe(redis: aioredis.Redis) -> None:
    store = FencedStore(redis)
    assert (await store.incrby("r", 1, "n", 3)).result == 3
    assert (await store.rpush("r", 1, "log", "x")).result == 1
    assert await store.observe("r", 10) == 10
    with pytest.raises(StaleFencingToken):
        await store.incrby("r", 9, "n", 1)
    with pytest.raises(StaleFencingToken):
        await store.rpush("r", 9, "log", "y")
    with pytest.raises(StaleFencingToken):
        await store.delete("r", 9, "n")
    assert await redis.get("n") == b"3"
    assert await redis.lrange("log", 0, -1) == [b"x"]
    assert (await store.delete("r", 10, "n")).result == 1
    assert await redis.exists("n") == 0


async def test_set_with_px_and_resources_are_independent(redis: aioredis.Redis) -> None:
    store = FencedStore(redis)
    await store.set("a", 100, "ka", "v", px=5000)
    assert 0 < await redis.pttl("ka") <= 5000
    await store.set("b", 1, "kb", "v")  # a different resource has its own fence
    assert await store.highest("b") == 1


async def test_function_form_accepts_edge_minted_tokens(redis: aioredis.Redis) -> None:
    # A Durable Object at the edge mints plain positive ints too.
    await fenced_write(redis, "order:1", 2**53 - 1, "k", b"\x00bytes")
    assert await redis.get("k") == b"\x00bytes"
    with pytest.raises(StaleFencingToken):
        await fenced_write(redis, "order:1", 2**52, "k", "x")


@pytest.mark.parametrize("token", [0, -1, 2**53, True, 1.0, "3"])
async def test_bad_tokens_write_nothing(redis: aioredis.Redis, token: object) -> None:
    store = FencedStore(redis)
    with pytest.raises(ValueError):
        await store.set("r", token, "k", "v")  # type: ignore[arg-type]
    assert await redis.dbsize() == 0


@pytest.mark.parametrize(("resource", "key"), [("", "k"), ("r", ""), ("x" * 513, "k"), ("r", "k" * 600)])
async def test_bad_keys_write_nothing(redis: aioredis.Redis, resource: str, key: str) -> None:
    store = FencedStore(redis)
    with pytest.raises(ValueError):
        await store.set(resource, 1, key, "v")
    assert await redis.dbsize() == 0


async def test_bad_value_and_options(redis: aioredis.Redis) -> None:
    store = FencedStore(redis)
    with pytest.raises(ValueError):
        await store.set("r", 1, "k", 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await store.set("r", 1, "k", "v", px=0)
    with pytest.raises(ValueError):
        FencedStore(redis, op_timeout=0)
    assert await redis.dbsize() == 0


async def test_unreachable_redis_is_typed_and_bounded() -> None:
    server = RedisServer().start()
    client = aioredis.Redis.from_url(server.url)
    try:
        store = FencedStore(client, op_timeout=0.5)
        await store.set("r", 1, "k", "v")
        server.pause()
        with pytest.raises(LockUnavailable):
            await store.set("r", 2, "k", "v")
        server.resume()
        server.kill()
        with pytest.raises(LockUnavailable):
            await store.set("r", 3, "k", "v")
    finally:
        await client.aclose()
        server.close()
