"""Fixtures for origin tests: real redis-server processes started here (single servers
and a 3-master Redis Cluster), the machine's PostgreSQL (EDGE_KV_PG_DSN, default
postgresql://postgres@127.0.0.1:5432/test)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from edge_kv.origin.testing import RedisClusterNodes, RedisServer

PG_DSN = os.environ.get("EDGE_KV_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


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
