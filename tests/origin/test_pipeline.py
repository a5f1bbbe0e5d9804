"""The auto-pipelined Redis transport (``edge_kv.origin._pipeline``) against real servers.

Concurrent calls of one tick go out in one write and decide exactly as the unbatched
path does on a replay; a server killed with calls in flight fails them with the typed
error at once and the next calls recover after a restart; a frozen server costs at most
the timeout, open or closed; ``SCRIPT FLUSH`` is invisible to callers; on a Redis Cluster
each node gets its own pipeline.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from edge_kv.core import SlidingLog, TokenBucket
from edge_kv.core.ratelimit import Policy
from edge_kv.origin import _pipeline, _redis
from edge_kv.origin.locks import RedisLock
from edge_kv.origin.locks.redlock import Redlock
from edge_kv.origin.ratelimit import RateLimiter, RateLimiterUnavailable
from edge_kv.origin.testing import RedisServer


def pipe_of(client: aioredis.Redis) -> _pipeline.AutoPipeline:
    t = _redis.transport(client)
    assert isinstance(t, _pipeline.AutoPipeline)
    return t


async def evalsha_calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_one_write_per_tick_and_same_decisions_as_unbatched(redis: aioredis.Redis) -> None:
    policies: list[Policy] = [TokenBucket(3, 2, name="s"), SlidingLog(5, 10, name="m")]
    batched = RateLimiter(redis, policies, prefix="a:")
    plain = RateLimiter(redis, policies, prefix="b:", autopipeline=False)
    rng = random.Random(7)
    t0 = 1_700_000_000_000_000
    replay = [(f"k{rng.randrange(8)}", rng.choice([0, 1, 1, 2]), t0 + i * 37_000) for i in range(300)]
    await batched.hit("warm", now_us=t0)  # the script is loaded and the connection open
    pipe = pipe_of(redis)
    writes, calls = pipe.writes, await evalsha_calls(redis)
    got = await asyncio.gather(*(batched.hit(k, c, now_us=t) for k, c, t in replay))
    assert pipe.writes - writes == 1  # 300 decisions, one write
    assert await evalsha_calls(redis) - calls == 300
    want = [await plain.hit(k, c, now_us=t) for k, c, t in replay]
    assert [(r.allowed, r.tiers) for r in got] == [(r.allowed, r.tiers) for r in want]
    assert sum(r.allowed for r in got) not in (0, len(got))


async def test_exact_burst_after_script_flush(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis, TokenBucket(5, 0.001))
    assert (await limiter.peek("warm")).allowed
    await redis.script_flush()  # every EVALSHA of the next batch answers NOSCRIPT
    results = await asyncio.gather(*(limiter.hit("burst") for _ in range(40)))
    assert [r.allowed for r in results] == [True] * 5 + [False] * 35  # in call order, exactly 5
    assert [r.decision.remaining for r in results[:5]] == [4, 3, 2, 1, 0]


async def test_killed_server_fails_in_flight_calls_typed_then_recovers(
    redis_servers: Callable[[int], list[RedisServer]],
) -> None:
    (server,) = redis_servers(1)
    client = aioredis.Redis.from_url(server.url)
    limiter = RateLimiter(client, TokenBucket(100, 1), timeout=2.0)
    try:
        assert (await limiter.hit("k")).allowed
        server.pause()  # the next batch is written and stays in flight
        calls = [asyncio.ensure_future(limiter.hit(f"k{i}")) for i in range(50)]
        await asyncio.sleep(0.05)
        assert pipe_of(client)._inflight and not any(c.done() for c in calls)
        started = time.monotonic()
        assert server._proc is not None
        os.kill(server._proc.pid, signal.SIGKILL)  # still frozen: dies with 50 calls in flight
        server.kill()  # reap it
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert time.monotonic() - started < 0.5  # not the 2 s timeout
        assert all(isinstance(o, RateLimiterUnavailable) for o in outcomes), outcomes[:3]
        with pytest.raises(RateLimiterUnavailable):  # refused: at once
            await asyncio.wait_for(limiter.hit("k"), 0.5)
        server.start()
        results = await asyncio.gather(*(limiter.hit("k") for _ in range(10)))
        assert all(r.allowed for r in results) and results[-1].decision.remaining == 90
    finally:
        await client.aclose()


@pytest.mark.parametrize("fail_open", [False, True])
async def test_frozen_server_bounded_by_timeout_open_or_closed(
    redis_servers: Callable[[int], list[RedisServer]], fail_open: bool
) -> None:
    (server,) = redis_servers(1)
    client = aioredis.Redis.from_url(server.url)
    limiter = RateLimiter(client, TokenBucket(3, 1), timeout=0.2, fail_open=fail_open)
    try:
        assert (await limiter.hit("k")).allowed
        server.pause()
        for _ in range(2):  # the stalled connection is dropped; the next one stalls too
            started = time.monotonic()
            outcomes = await asyncio.gather(*(limiter.hit("k") for _ in range(30)), return_exceptions=True)
            assert time.monotonic() - started < 0.2 + 0.3
            if fail_open:
                assert all(not isinstance(o, BaseException) and o.degraded and o.allowed for o in outcomes)
            else:
                assert all(isinstance(o, RateLimiterUnavailable) for o in outcomes)
        server.resume()
        after = await limiter.hit("k")
        assert not after.degraded and after.now_us > 0
    finally:
        server.resume()
        await client.aclose()


async def test_cancelled_before_the_flush_is_not_sent(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis, TokenBucket(10, 0.001))
    await limiter.peek("warm")
    task = asyncio.ensure_future(limiter.hit("k"))
    await asyncio.sleep(0)  # queued, not yet written
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await limiter.hit("k")).decision.remaining == 9  # the cancelled hit never ran


async def test_locks_and_redlock_share_node_transports(
    redis_servers: Callable[[int], list[RedisServer]],
) -> None:
    servers = redis_servers(3)
    clients = [aioredis.Redis.from_url(s.url) for s in servers]
    try:
        locks = [RedisLock(clients[0], f"r{i}", ttl_ms=5_000) for i in range(20)]
        assert all(await asyncio.gather(*(lock.try_acquire() for lock in locks)))
        tokens = sorted(lock.token or 0 for lock in locks)
        assert tokens == [1] * 20
        await asyncio.gather(*(lock.release() for lock in locks))
        assert await clients[0].dbsize() == 20  # only the fencing counters are left
        red = [Redlock(clients, f"job{i}", ttl_ms=5_000) for i in range(10)]
        assert all(await asyncio.gather(*(lock.try_acquire() for lock in red)))
        await asyncio.gather(*(lock.release() for lock in red))
        await _redis.wait_detached()
        for c in clients:
            assert pipe_of(c).commands >= 10
    finally:
        for c in clients:
            await c.aclose()


async def test_cluster_keys_on_every_node(redis_cluster: RedisCluster) -> None:
    limiter = RateLimiter(redis_cluster, TokenBucket(3, 0.001))
    await limiter.peek("warm")  # the first call fills the client's slot map
    keys = [f"user:{i}" for i in range(30)]
    nodes = {redis_cluster.get_node_from_key(limiter.keys_for(k)[0]).name for k in keys}  # type: ignore[union-attr]
    assert len(nodes) == 3
    results = await asyncio.gather(*(limiter.hit(k) for k in keys for _ in range(5)))
    allowed = [r.allowed for r in results]
    assert all(allowed[i * 5 : i * 5 + 5] == [True, True, True, False, False] for i in range(30))
    t = _redis.transport(redis_cluster)
    assert isinstance(t, _pipeline.ClusterTransport) and len(t._pipes) == 3
    lock = RedisLock(redis_cluster, "cl", ttl_ms=5_000)
    assert await lock.try_acquire() and lock.token == 1
    await lock.release()


def test_python_reply_parser_matches_hiredis() -> None:
    stream = (
        b"+OK\r\n-NOSCRIPT No matching script\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*3\r\n:1\r\n$0\r\n\r\n*-1\r\n"
        b"*2\r\n*1\r\n:7\r\n$2\r\nab\r\n_\r\n#t\r\n,1.5\r\n%1\r\n$1\r\na\r\n:1\r\n"
    )
    want = [b"OK", "NOSCRIPT No matching script", 42, b"hello", None, [1, b"", None]]
    want += [[[7], b"ab"], None, True, 1.5, {b"a": 1}]
    reader = _pipeline._PyReader(None, "strict")
    got = []
    for i in range(len(stream)):  # one byte at a time: every split point
        reader.feed(stream[i : i + 1])
        while (reply := reader.gets()) is not _pipeline._MISSING:
            got.append(str(reply) if isinstance(reply, _pipeline._ReplyError) else reply)
    assert got == want
    text = _pipeline._PyReader("utf-8", "strict")
    text.feed(b"$2\r\nab\r\n")
    assert text.gets() == "ab"
