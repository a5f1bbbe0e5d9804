"""Fenced writes against a real redis-server: stale tokens refused, nothing written; a
token issued twice is honoured for the first owner that uses it only."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import cast

import pytest
import redis.asyncio as aioredis

from edge_kv.core.lease import fencing_accepts
from edge_kv.origin.locks import (
    FencedStore,
    LockNotOwned,
    LockUnavailable,
    RedisLock,
    StaleFencingToken,
    fenced_write,
)
from edge_kv.origin.locks.redlock import Redlock
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
    # redis-py's asyncio client shares the sync client's signatures (`Awaitable[list] | list`).
    assert await cast(Awaitable[list[bytes]], redis.lrange("log", 0, -1)) == [b"x"]
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


async def test_unreachable_redis_is_typed_and_bounded(
    redis_servers: Callable[[int], list[RedisServer]],
) -> None:
    [server] = redis_servers(1)
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


# --- a token issued twice: two holders, one token ----------------------------------


async def test_equal_token_from_another_owner_is_refused(redis: aioredis.Redis) -> None:
    """Holders A and B both got token 4 (the issue's measurement: A, B, A were all
    accepted). The first owner to use token 4 at the storage keeps it: B is refused
    and writes nothing, so the two holders' writes never interleave."""
    store = FencedStore(redis)
    await store.set("r", 4, "{r}:data", "a1", owner="A")
    with pytest.raises(StaleFencingToken) as info:
        await store.set("r", 4, "{r}:data", "b1", owner="B")
    assert info.value.token == 4 and info.value.highest == 4
    assert "another owner" in str(info.value)
    assert await redis.get("{r}:data") == b"a1"  # B wrote nothing
    with pytest.raises(StaleFencingToken):
        await store.observe("r", 4, owner="B")  # nor can B claim the fence
    await store.set("r", 4, "{r}:data", "a2", owner="A")  # A keeps writing
    assert await redis.get("{r}:data") == b"a2"
    assert await store.fence("r") == (4, "A")
    await store.set("r", 5, "{r}:data", "b2", owner="B")  # B with a newer token wins
    with pytest.raises(StaleFencingToken):
        await store.set("r", 4, "{r}:data", "a3", owner="A")
    assert await redis.get("{r}:data") == b"b2"


async def test_observe_by_one_holder_shuts_out_the_other_with_the_same_token(redis: aioredis.Redis) -> None:
    store = FencedStore(redis)
    assert await store.observe("r", 4, owner="B") == 4
    for op in (
        store.set("r", 4, "{r}:data", "a", owner="A"),
        store.incrby("r", 4, "{r}:n", owner="A"),
        store.rpush("r", 4, "{r}:log", "a", owner="A"),
        store.delete("r", 4, "{r}:data", owner="A"),
        store.set("r", 4, "{r}:data", "anonymous"),  # a plain token cannot pass as B either
    ):
        with pytest.raises(StaleFencingToken):
            await op
    assert await redis.exists("{r}:data", "{r}:n", "{r}:log") == 0
    await store.set("r", 4, "{r}:data", "b", owner="B")
    assert await redis.get("{r}:data") == b"b"


async def test_lock_object_carries_token_and_owner(redis: aioredis.Redis) -> None:
    store = FencedStore(redis)
    lock = RedisLock(redis, "r", ttl_ms=5000)
    with pytest.raises(LockNotOwned):
        await store.set("r", lock, "{r}:data", "v")  # holds no lease yet
    async with lock:
        await store.set("r", lock, "{r}:data", "v")
        assert await store.fence("r") == (lock.token, lock.owner)
        with pytest.raises(ValueError):
            await store.set("r", lock, "{r}:data", "v", owner="someone-else")
        assert lock.token is not None
        with pytest.raises(StaleFencingToken):  # same token, not the lock's owner
            await store.set("r", lock.token, "{r}:data", "w", owner="impostor")


async def test_fence_written_before_owners_is_read_as_anonymous(redis: aioredis.Redis) -> None:
    store = FencedStore(redis)
    await redis.set(store.fence_key("r"), "7")  # a fence as earlier versions wrote it
    assert await store.fence("r") == (7, "")
    await store.set("r", 7, "k", "plain")  # a plain token, as before: accepted
    with pytest.raises(StaleFencingToken):
        await store.set("r", 7, "k", "owned", owner="A")
    await store.set("r", 8, "k", "owned", owner="A")
    assert await store.fence("r") == (8, "A")


async def test_two_redlock_holders_with_one_reissued_token(
    redis_servers: Callable[[int], list[RedisServer]],
) -> None:
    """The docs' failure case for real: every Redlock node restarts without persistence
    while holder A (token 4) is paused, so the counters start again and B is granted
    token 4 too. Their fenced writes A, B, A: B's is refused; A's are accepted."""
    servers = redis_servers(3)
    clients = [aioredis.Redis.from_url(s.url) for s in servers]
    storage_server = redis_servers(1)[0]
    storage = aioredis.Redis.from_url(storage_server.url)
    try:
        for _ in range(3):
            warm = Redlock(clients, "job", ttl_ms=5000)
            await warm.acquire()
            await warm.release()
        a = Redlock(clients, "job", ttl_ms=300)
        assert await a.acquire() == 4
        for s in servers:
            s.restart()  # all counters lost
        for _ in range(3):
            other = Redlock(clients, "job", ttl_ms=5000)
            await other.acquire(blocking_timeout=2)
            await other.release()
        b = Redlock(clients, "job", ttl_ms=5000)
        assert await b.acquire(blocking_timeout=2) == 4  # token 4, issued twice
        assert a.token == b.token == 4 and a.owner != b.owner
        store = FencedStore(storage)
        await store.set("job", a, "{job}:state", "a1")  # paused A wakes up first
        with pytest.raises(StaleFencingToken):
            await store.set("job", b, "{job}:state", "b1")  # B must stop: its token is taken
        await store.set("job", a, "{job}:state", "a2")
        assert await storage.get("{job}:state") == b"a2"
        await b.release()
    finally:
        for c in [*clients, storage]:
            await c.aclose()


async def test_fenced_write_script_mirrors_core_rule(redis: aioredis.Redis) -> None:
    """fenced_write.lua against edge_kv.core.lease.fencing_accepts on random sequences of
    (token, owner): identical verdicts and identical fence state after every step."""
    rng = random.Random(9)
    store = FencedStore(redis)
    for case in range(40):
        resource = f"res{case}"
        highest: int | None = None
        seen = ""
        for _ in range(30):
            token = rng.randint(1, 4)
            owner = rng.choice(["", "A", "B", "C|with-bar"])
            expected = fencing_accepts(highest, token, seen, owner)
            try:
                await store.set(
                    resource, token, "{" + resource + "}:d", f"{token}{owner}", owner=owner or None
                )
                accepted = True
            except StaleFencingToken:
                accepted = False
            assert accepted is expected, (case, highest, seen, token, owner)
            if expected and (highest is None or token > highest):
                highest, seen = token, owner
            assert await store.fence(resource) == (None if highest is None else (highest, seen))
