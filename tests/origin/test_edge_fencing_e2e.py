"""End to end: fencing tokens minted by the edge lock guard an origin's Redis writes.

The offline host serves the reference Worker (its ``LockService`` Durable Object); a real
redis-server is the origin's storage, written through
:class:`edge_kv.origin.locks.fencing.FencedStore`. A holder whose lease ran out while it
was paused gets its late write refused, because the next holder's (higher) token has
already reached the fence.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from edge_kv.origin.locks.errors import StaleFencingToken
from edge_kv.origin.locks.fencing import FencedStore

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "http"))
sys.path.insert(0, str(ROOT / "scripts"))

from build_worker import build  # noqa: E402
from hostproc import HostProcess  # noqa: E402
from test_edge_limits import AUTH, write_test_config  # noqa: E402

pytestmark = pytest.mark.slow  # builds the worker and starts the offline host


@pytest.fixture(scope="module")
def edge_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("fencing-e2e")
    out = build(directory / "worker")
    base = directory / "base.toml"
    text = (ROOT / "wrangler.toml").read_text()
    lines = [
        f'main = "{out / "entry.py"}"' if line.startswith("main =") else line for line in text.splitlines()
    ]
    base.write_text("\n".join(lines) + "\n")
    host = HostProcess(write_test_config(directory / "cfg", base), directory / "persist")
    try:
        yield host.start()
    finally:
        host.close()


@pytest.fixture
async def edge(edge_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=edge_url, timeout=60, headers=AUTH) as c:
        yield c


async def acquire(edge: httpx.AsyncClient, resource: str, ttl_ms: int, wait_ms: int = 0) -> dict[str, Any]:
    r = await edge.post(
        f"/locks/{resource}/acquire", json={"ttl_ms": ttl_ms, "wait_ms": wait_ms, "poll_ms": 50}
    )
    assert r.status_code == 200, r.text
    lease: dict[str, Any] = r.json()
    return lease


async def test_paused_holder_is_fenced_off_by_edge_tokens(
    edge: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    store = FencedStore(redis)
    a = await acquire(edge, "invoice-42", ttl_ms=700)
    await store.set("invoice-42", a["token"], "invoice:{invoice-42}", "written-by-a")
    # A pauses past its lease; B waits for the lock and gets the next token.
    b = await acquire(edge, "invoice-42", ttl_ms=5000, wait_ms=5000)
    assert b["token"] > a["token"]
    await store.set("invoice-42", b["token"], "invoice:{invoice-42}", "written-by-b")
    # A wakes up and writes with its old token: refused, B's value stays.
    with pytest.raises(StaleFencingToken):
        await store.set("invoice-42", a["token"], "invoice:{invoice-42}", "late-write-by-a")
    assert await redis.get("invoice:{invoice-42}") == b"written-by-b"
    assert await store.highest("invoice-42") == b["token"]
    # A's lease is gone at the edge too.
    r = await edge.post("/locks/invoice-42/release", json={"owner": a["owner"]})
    assert r.status_code == 409
    assert (await edge.post("/locks/invoice-42/release", json={"owner": b["owner"]})).status_code == 200


async def test_edge_lock_and_fenced_counter_under_contention(
    edge: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    store = FencedStore(redis)
    rounds, workers = 2, 8

    async def worker() -> None:
        for _ in range(rounds):
            lease = await acquire(edge, "counter", ttl_ms=5000, wait_ms=10_000)
            await store.incrby("counter", lease["token"], "count:{counter}")
            r = await edge.post("/locks/counter/release", json={"owner": lease["owner"]})
            assert r.status_code == 200, r.text

    await asyncio.gather(*(worker() for _ in range(workers)))
    assert int(await redis.get("count:{counter}") or 0) == rounds * workers
    assert await store.highest("counter") == rounds * workers
