"""Every Redis-backed part of edge_kv.origin against a real 3-master Redis Cluster
(``redis.asyncio.cluster.RedisCluster``, default client options).

Keys that one script touches together share a slot by construction (hash tags); a user
key that cannot (a fenced write whose data key is outside the resource's slot) is refused
with a typed ``InvalidInput`` before anything is sent. The session cluster starts once
(~2 s); each test flushes every master.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.cluster import RedisCluster

from edge_kv.core import SlidingLog, TokenBucket
from edge_kv.core.errors import InvalidInput
from edge_kv.origin.idempotency import (
    IdempotencyService,
    RedisDeduplicator,
    RedisStore,
    StoredResponse,
    fingerprint,
)
from edge_kv.origin.locks import FencedStore, LockNotOwned, RedisLock, StaleFencingToken
from edge_kv.origin.locks.redlock import Redlock
from edge_kv.origin.ratelimit import RateLimiter
from edge_kv.origin.resilience import BreakerConfig, CircuitBreaker, CircuitOpenError
from edge_kv.origin.resilience.breaker_redis import RedisBreakerStore


def nodes_of(client: RedisCluster, keys: list[str]) -> set[str]:
    nodes = [client.get_node_from_key(k) for k in keys]
    assert all(nodes)
    return {n.name for n in nodes if n is not None}


async def test_cluster_is_real(redis_cluster: RedisCluster) -> None:
    assert len(redis_cluster.get_primaries()) == 3
    info = await redis_cluster.cluster_info()
    assert info["cluster_state"] == "ok"


async def test_rate_limiter_tiers_on_cluster(redis_cluster: RedisCluster) -> None:
    limiter = RateLimiter(
        redis_cluster, [TokenBucket(3, 1, name="burst"), SlidingLog(5, 60, name="minute")], timeout=1.0
    )
    users = [f"user:{i}" for i in range(12)]
    # The users' states live on different masters; the tiers of one user share a slot.
    assert len(nodes_of(redis_cluster, [limiter.keys_for(u)[0] for u in users])) > 1
    for user in users:
        assert len({redis_cluster.keyslot(k) for k in limiter.keys_for(user)}) == 1
        results = [await limiter.hit(user) for _ in range(4)]
        assert [r.allowed for r in results] == [True, True, True, False]
        assert results[-1].decision.policy == "burst"
    await limiter.reset(users[0])
    assert (await limiter.hit(users[0])).allowed


async def test_redis_lock_and_fenced_store_on_cluster(redis_cluster: RedisCluster) -> None:
    store = FencedStore(redis_cluster)
    names = [f"invoice:{i}" for i in range(8)]
    assert len(nodes_of(redis_cluster, [RedisLock(redis_cluster, n).key for n in names])) > 1
    for name in names:
        a = RedisLock(redis_cluster, name, ttl_ms=5000, blocking_timeout=0)
        b = RedisLock(redis_cluster, name, ttl_ms=5000, blocking_timeout=0)
        t1 = await a.acquire()
        assert await b.try_acquire() is None
        data_key = f"{{{name}}}:state"
        await store.set(name, a, data_key, "paid")
        assert await a.extend(6000) > 5000
        await a.release()
        t2 = await b.acquire()
        assert t2 > t1
        await store.set(name, b, data_key, "refunded")
        with pytest.raises(StaleFencingToken):
            await store.set(name, t1, data_key, "late")
        assert await redis_cluster.get(data_key) == b"refunded"
        await b.release()
        with pytest.raises(LockNotOwned):
            await b.release()


async def test_fenced_write_outside_the_resource_slot_is_a_typed_error(redis_cluster: RedisCluster) -> None:
    store = FencedStore(redis_cluster)
    async with RedisLock(redis_cluster, "invoice:42", ttl_ms=5000) as lock:
        token = lock.token
        assert token is not None
        # The README's key: resource "invoice:42", data key "invoice:42:state".
        assert redis_cluster.keyslot("invoice:42:state") != redis_cluster.keyslot(
            store.fence_key("invoice:42")
        )
        with pytest.raises(InvalidInput) as info:
            await store.set("invoice:42", token, "invoice:42:state", "paid")
        assert isinstance(info.value, ValueError)
        assert "{invoice:42}:state" in str(info.value)
        for op in (
            store.incrby("invoice:42", token, "invoice:42:n"),
            store.rpush("invoice:42", token, "invoice:42:log", "x"),
            store.delete("invoice:42", token, "invoice:42:state"),
        ):
            with pytest.raises(InvalidInput):
                await op
        # Nothing was sent: no fence, no data.
        assert await store.highest("invoice:42") is None
        assert await redis_cluster.exists("invoice:42:state") == 0
        await store.set("invoice:42", lock, "{invoice:42}:state", "paid")
        assert await redis_cluster.get("{invoice:42}:state") == b"paid"


async def test_redlock_node_may_be_a_cluster_client(redis_cluster: RedisCluster) -> None:
    # Redlock's nodes are independent deployments; any of them may be a Redis Cluster.
    a = Redlock([redis_cluster], "job:7", ttl_ms=5000, blocking_timeout=0)
    b = Redlock([redis_cluster], "job:7", ttl_ms=5000, blocking_timeout=0)
    t1 = await a.acquire()
    assert await b.try_acquire() is None
    assert await a.extend(5000) > 4000
    await a.release()
    assert await b.acquire() > t1
    await b.release()


async def test_idempotency_store_on_cluster(redis_cluster: RedisCluster) -> None:
    store = RedisStore(redis_cluster)
    service = IdempotencyService(store, ttl_s=60, lease_s=5)
    runs = 0

    async def handler() -> StoredResponse:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.05)
        return StoredResponse(201, (("content-type", "application/json"),), b'{"id":1}')

    fp = fingerprint("POST", "/orders", b'{"a":1}', "application/json")
    outcomes = await asyncio.gather(
        *(service.execute(f"key-{i % 4}", fp, handler, scope="alice") for i in range(4))
    )
    assert runs == 4  # four distinct keys, spread over the masters
    replays = await asyncio.gather(
        *(service.execute(f"key-{i}", fp, handler, scope="alice") for i in range(4))
    )
    assert runs == 4
    assert all(o.replayed and o.response.body == b'{"id":1}' for o in replays)
    assert all(o.response.status == 201 for o in outcomes)


async def test_idempotency_store_refuses_decoding_cluster_client(redis_cluster: RedisCluster) -> None:
    decoding = RedisCluster(
        startup_nodes=redis_cluster.get_nodes()[:1], decode_responses=True
    )  # bodies are bytes
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            RedisStore(decoding)
    finally:
        await decoding.aclose()


async def test_deduplicator_on_cluster(redis_cluster: RedisCluster) -> None:
    dedup = RedisDeduplicator(redis_cluster, consumer="billing", ttl_s=60)
    processed: list[str] = []

    async def handle(mid: str) -> None:
        processed.append(mid)

    ids = [f"msg-{i}" for i in range(10)]
    for _ in range(3):
        for mid in ids:
            await dedup.handle(mid, lambda mid=mid: handle(mid))  # type: ignore[misc]
    assert sorted(processed) == sorted(ids)
    await dedup.forget("msg-0")
    assert not await dedup.seen("msg-0")


async def test_shared_breaker_on_cluster(redis_cluster: RedisCluster) -> None:
    cfg = BreakerConfig(window_size=4, minimum_calls=4, failure_rate_threshold=50, wait_in_open=30)
    store = RedisBreakerStore(redis_cluster, timeout=1.0)
    a = CircuitBreaker("payments", cfg, store=store)
    b = CircuitBreaker("payments", cfg, store=RedisBreakerStore(redis_cluster, timeout=1.0))

    async def ok() -> str:
        return "ok"

    async def boom() -> str:
        raise ConnectionError("down")

    for br in (a, b):
        await br.call(ok)
        with pytest.raises(ConnectionError):
            await br.call(boom)
    with pytest.raises(CircuitOpenError):
        await a.call(ok)
    with pytest.raises(CircuitOpenError):
        await b.call(ok)
    assert store.redis_errors == 0 and not store.degraded
