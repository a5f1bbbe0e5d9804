"""Fixtures for origin tests: real redis-server processes started here (single servers
and a 3-master Redis Cluster), the machine's PostgreSQL (EDGE_KV_PG_DSN, default
postgresql://postgres@127.0.0.1:5432/test).

The ``redis`` and ``postgres`` markers follow from these fixtures (see
:func:`pytest_collection_modifyitems`), so ``pytest -m "not redis and not postgres"``
selects the tests that need neither server without a list to keep up to date. A test
that starts a redis-server without going through a fixture fails (see
:func:`_redis_servers_only_through_fixtures`) rather than escaping the marker.
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from edge_kv.origin.testing import RedisClusterNodes, RedisServer

PG_DSN = os.environ.get("EDGE_KV_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")

_HERE = Path(__file__).resolve().parent
# Every fixture that starts redis-server processes (those built on them, like `redis`,
# `redis_cluster` or the idempotency stores, are in a test's fixture closure too).
REDIS_FIXTURES = frozenset({"redis_server", "redis_servers", "redis_cluster_nodes"})
POSTGRES_FIXTURES = frozenset({"pg_dsn"})


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each origin test by the servers its fixtures start or connect to."""
    for item in items:
        if not item.path.resolve().is_relative_to(_HERE):
            continue
        used = set(getattr(item, "fixturenames", ()))
        if used & REDIS_FIXTURES:
            item.add_marker(pytest.mark.redis)
        if used & POSTGRES_FIXTURES:
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    """Leaked connections and transports warn when collected; collecting after every test
    makes the warning (an error here) land on the test that leaked, not on whatever test the
    garbage collector happens to run in later."""
    yield
    gc.collect()


# What is alive once the test modules are imported stays alive: moving it out of the
# collector's generations makes the per-test collection above cost ~1/4 as much.
gc.freeze()


@pytest.fixture(autouse=True)
def _redis_servers_only_through_fixtures(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a test not marked ``redis``, starting a redis-server is an error: use
    ``redis_server`` / ``redis_servers`` / ``redis_cluster_nodes`` so the marker follows."""
    if request.node.get_closest_marker("redis") is not None:
        return

    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError(
            f"{request.node.nodeid} starts a redis-server without a redis fixture "
            f"({', '.join(sorted(REDIS_FIXTURES))}): it would escape the `redis` marker"
        )

    monkeypatch.setattr(RedisServer, "start", refuse)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole session (tests flush it)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_servers() -> Iterator[Callable[[int], list[RedisServer]]]:
    """Factory: ``redis_servers(5)`` starts 5 independent servers, all stopped after the test."""
    started: list[RedisServer] = []

    def make(n: int) -> list[RedisServer]:
        batch = [RedisServer().start() for _ in range(n)]
        started.extend(batch)
        return batch

    yield make
    for server in started:
        server.close()


@pytest_asyncio.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A client on the session server, flushed before each test."""
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def redis_cluster_nodes() -> Iterator[RedisClusterNodes]:
    """One real Redis Cluster (3 masters, no replicas) for the whole session, started on
    first use (~2 s) and stopped by PID at the end."""
    with RedisClusterNodes(3) as nodes:
        yield nodes


@pytest_asyncio.fixture
async def redis_cluster(redis_cluster_nodes: RedisClusterNodes) -> AsyncIterator[RedisCluster]:
    """A ``redis.asyncio.cluster.RedisCluster`` client (default retry configuration, as a
    user would create it) on the session cluster, every master flushed before the test."""
    client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in redis_cluster_nodes.startup_nodes])
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    return PG_DSN
