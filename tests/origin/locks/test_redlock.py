"""Redlock against 5 real redis-server processes started by the test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from edge_kv.origin import _redis
from edge_kv.origin.locks import FencedStore, LockError, LockNotOwned, LockUnavailable, StaleFencingToken
from edge_kv.origin.locks.redlock import Redlock
from edge_kv.origin.testing import RedisServer

STRESS_SECONDS = float(os.environ.get("EDGE_KV_STRESS_SECONDS", "5"))

Cluster = tuple[list[RedisServer], list[aioredis.Redis]]


@pytest_asyncio.fixture
async def cluster(redis_servers: Callable[[int], list[RedisServer]]) -> AsyncIterator[Cluster]:
    servers = redis_servers(5)
    clients = [aioredis.Redis.from_url(s.url) for s in servers]
    try:
        yield servers, clients
    finally:
        await close_clients(clients)


async def close_clients(clients: list[aioredis.Redis]) -> None:
    """Close the nodes' clients once the undo of a failed attempt, which Redlock lets run
    on in the background, is done (closed before, it would reconnect and leak)."""
    await _redis.wait_detached()
    for c in clients:
        await c.aclose()


async def test_acquire_release_tokens_increase_and_exclude(cluster: Cluster) -> None:
    _, clients = cluster
    a = Redlock(clients, "res", ttl_ms=5000)
    b = Redlock(clients, "res", ttl_ms=5000)
    t1 = await a.acquire()
    await _redis.wait_detached()  # acquire returns at quorum; the other nodes' grants follow
    for c in clients:
        assert (await c.get(a.key)).decode() == a.owner
    assert 4000 < a.remaining_ms() <= 5000 - 52  # TTL minus elapsed minus drift (1% + 2 ms)
    assert await b.try_acquire() is None
    await a.release()
    await _redis.wait_detached()  # release returns at quorum; the others run on
    for c in clients:
        assert await c.exists(a.key) == 0
    t2 = await b.acquire()
    assert t2 > t1
    assert await b.extend(8000) > 7000
    with pytest.raises(LockNotOwned):
        await a.release()
    await b.release()


async def test_two_nodes_down_still_acquires_three_down_fails_typed_then_recovers(cluster: Cluster) -> None:
    servers, clients = cluster
    lock = Redlock(clients, "res", ttl_ms=2000, op_timeout=0.2)
    t0 = await lock.acquire()
    await lock.release()
    servers[0].kill()
    servers[1].kill()
    t1 = await lock.acquire(blocking_timeout=1)
    assert t1 > t0
    await lock.release()
    servers[2].kill()
    started = time.monotonic()
    with pytest.raises(LockUnavailable):
        await lock.acquire(blocking_timeout=0.5)
    assert time.monotonic() - started < 1.5
    with pytest.raises(LockUnavailable):
        await lock.try_acquire()
    for s in servers[:3]:
        s.start()  # empty: persistence is off
    t2 = await lock.acquire(blocking_timeout=2)
    assert t2 > t1  # the surviving nodes' counters carry the sequence on
    for c in clients:  # lagging (restarted) nodes were raised to the token
        assert int(await c.get(lock.counter_key)) == t2
    await lock.release()


async def test_paused_node_is_bounded_by_op_timeout(cluster: Cluster) -> None:
    servers, clients = cluster
    servers[4].pause()
    try:
        lock = Redlock(clients, "res", ttl_ms=3000, op_timeout=0.2)
        started = time.monotonic()
        await lock.acquire()
        assert time.monotonic() - started < 0.6
        assert 0 < lock.remaining_ms() < 2800
        await lock.release()
    finally:
        servers[4].resume()


async def test_paused_node_costs_no_timeout_once_a_quorum_answered(cluster: Cluster) -> None:
    """One node SIGSTOPped: acquire returns once a quorum granted and release once a
    quorum released, so an acquire + release pair does not wait out that node's
    ``op_timeout`` (before returning at quorum each of them did: >= 2 x 1 s here)."""
    servers, clients = cluster
    lock = Redlock(clients, "res", ttl_ms=5000, op_timeout=1.0)
    await lock.acquire()  # steady state: every node's counter is past 1, connections open
    await lock.release()
    servers[4].pause()
    try:
        for _ in range(3):
            started = time.monotonic()
            token = await lock.acquire()
            assert lock.remaining_ms() > 4000
            await lock.release()
            elapsed = time.monotonic() - started
            assert elapsed < 0.3, f"acquire + release took {elapsed:.3f} s"
            assert token > 1
    finally:
        servers[4].resume()
    await _redis.wait_detached()
    assert await clients[4].exists(lock.key) == 0  # late grants were released in the background


@pytest.mark.parametrize("failure", ["killed", "paused"])
async def test_acquire_bounded_by_blocking_timeout_plus_one_op_timeout(
    redis_servers: Callable[[int], list[RedisServer]], failure: str
) -> None:
    """3 of 5 nodes down: acquire(blocking_timeout=b) raises LockUnavailable within
    b + op_timeout (the documented bound), whether the nodes refuse connections (killed)
    or accept and never answer (SIGSTOP). Clients as users build them (redis-py's
    default Retry: 3 retries with backoff)."""
    servers = redis_servers(5)
    clients = [aioredis.Redis(host="127.0.0.1", port=s.port) for s in servers]
    blocking, op = 0.5, 0.2
    try:
        lock = Redlock(clients, "res", ttl_ms=2000, op_timeout=op)
        await lock.acquire()
        await lock.release()  # connections to every node are open
        for s in servers[:3]:
            s.kill() if failure == "killed" else s.pause()
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(LockUnavailable):
                await lock.acquire(blocking_timeout=blocking)
            elapsed = time.monotonic() - started
            assert blocking <= elapsed <= blocking + op + 0.05, f"{failure}: {elapsed:.3f} s"
        started = time.monotonic()
        with pytest.raises(LockUnavailable):
            await lock.try_acquire()  # one attempt: at most one op_timeout
        assert time.monotonic() - started <= op + 0.05
    finally:
        for s in servers[:3]:
            s.resume()
        await close_clients(clients)


async def test_token_exceeds_a_counter_ahead_on_any_node(cluster: Cluster) -> None:
    _, clients = cluster
    lock = Redlock(clients, "res", ttl_ms=5000)
    await clients[3].set(lock.counter_key, 41)  # one node is ahead (others restarted empty)
    assert await lock.acquire() == 42  # node 3 incremented 41
    for c in clients:
        assert int(await c.get(lock.counter_key)) == 42  # the others were raised
    await lock.release()
    # A node that refuses (an orphaned lease) reports its counter; the token exceeds it.
    # Counters that disagree (nodes 1 and 2 ahead too, so no three granting nodes agree) rule
    # out the steady-state early return: the attempt hears every node, as after a counter loss
    # (docs/origin-locks.md). In the steady state the refusal may arrive after the quorum and
    # is not needed there.
    await clients[0].set(lock.key, "orphan", px=5000)
    await clients[0].set(lock.counter_key, 100)
    await clients[1].set(lock.counter_key, 60)
    await clients[2].set(lock.counter_key, 70)
    assert await lock.acquire() == 101
    await lock.release()
    assert await clients[0].get(lock.key) == b"orphan"


async def test_no_quorum_grant_releases_everywhere(cluster: Cluster) -> None:
    _, clients = cluster
    lock = Redlock(clients, "res", ttl_ms=5000)
    for c in clients[:3]:
        await c.set(lock.key, "other", px=5000)
    assert await lock.try_acquire() is None
    for c in clients[3:]:
        assert await c.exists(lock.key) == 0  # the two minority grants were undone


def test_bad_input(cluster: Cluster) -> None:
    _, clients = cluster
    with pytest.raises(ValueError):
        Redlock([], "res")
    with pytest.raises(ValueError):
        Redlock([clients[0], clients[0]], "res")
    with pytest.raises(ValueError):
        Redlock(clients, "")
    with pytest.raises(ValueError):
        Redlock(clients, "res", ttl_ms=0)


@pytest.mark.slow  # EDGE_KV_STRESS_SECONDS
async def test_stress_no_overlap_and_no_out_of_order_write(cluster: Cluster, redis: aioredis.Redis) -> None:
    """Contenders do read-modify-write on a fenced counter while nodes die and return.

    Phases of STRESS_SECONDS/4 each: all up; 2 nodes killed; 3 killed; all restarted
    (empty). Overlap is measured: a holder entering while another holder still has
    validity left is counted.
    """
    servers, clients = cluster
    store = FencedStore(redis)
    phase = 0
    stop = False
    active: list[Redlock] = []
    overlaps = accepted = stale = 0
    succeeded = [0, 0, 0, 0]
    failed = [0, 0, 0, 0]

    async def contender() -> None:
        nonlocal overlaps, accepted, stale
        lock = Redlock(clients, "stress", ttl_ms=2000, op_timeout=0.2, blocking_timeout=0.5)
        while not stop:
            start_phase = phase
            try:
                token = await lock.acquire()
            except LockError:
                failed[start_phase] += 1
                continue
            # An acquire counts for a phase only if it started and ended inside it.
            if phase == start_phase:
                succeeded[start_phase] += 1
            if any(other.remaining_ms() > 0 for other in active):
                overlaps += 1
            active.append(lock)
            try:
                raw = await redis.get("counter")
                await asyncio.sleep(random.uniform(0, 0.004))
                await store.set("stress", token, "counter", int(raw or 0) + 1)
                await store.rpush("stress", token, "log", token)
                accepted += 1
            except StaleFencingToken:
                stale += 1
            finally:
                active.remove(lock)
            with contextlib.suppress(LockError):
                await lock.release()
            await asyncio.sleep(random.uniform(0, 0.002))

    tasks = [asyncio.create_task(contender()) for _ in range(4)]
    quarter = STRESS_SECONDS / 4
    await asyncio.sleep(quarter)
    servers[0].kill()
    servers[1].kill()
    phase = 1
    await asyncio.sleep(quarter)
    servers[2].kill()
    phase = 2
    await asyncio.sleep(quarter)
    for s in servers[:3]:
        s.start()
    phase = 3
    await asyncio.sleep(quarter)
    stop = True
    await asyncio.gather(*tasks)

    # redis-py's asyncio client shares the sync client's signatures (`Awaitable[list] | list`).
    log = [int(x) for x in await cast(Awaitable[list[bytes]], redis.lrange("log", 0, -1))]
    assert overlaps == 0
    assert succeeded[0] > 0 and succeeded[1] > 0 and succeeded[3] > 0, (succeeded, failed)
    assert succeeded[2] == 0 and failed[2] > 0, (succeeded, failed)
    assert int(await redis.get("counter")) == accepted == len(log)  # no lost update
    assert log == sorted(log) and len(set(log)) == len(log)  # strictly increasing tokens
    assert stale <= 1, stale  # only a holder whose lease lapsed under a node kill may be refused
