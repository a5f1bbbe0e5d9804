"""A process that dies between executing and storing: its in-flight mark must go away
within the lease TTL, and the retry must execute exactly once."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from edge_kv.origin.idempotency import IdempotencyService, InFlight, StoredResponse
from edge_kv.origin.testing import RedisServer

from .conftest import STORE_KINDS, StoreFactory

CHILD = Path(__file__).with_name("crash_child.py")


@pytest.mark.parametrize("kind", STORE_KINDS)
async def test_crash_releases_the_mark_within_the_lease(
    kind: str,
    make_store: StoreFactory,
    redis: aioredis.Redis,
    redis_server: RedisServer,
    pg_dsn: str,
    table: str,
) -> None:
    store = await make_store(kind)  # creates the table for the child too
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        kind,
        redis_server.url,
        pg_dsn,
        table,
        "order-42",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    crashed_at = time.monotonic()
    assert proc.returncode == 17, err.decode()
    assert out.decode().strip() == "executed"
    assert int(await redis.get("crash:executions") or 0) == 1

    svc = IdempotencyService(store, lease_s=1.0)
    executions = 0

    async def handler() -> StoredResponse:
        nonlocal executions
        executions += 1
        await redis.incr("crash:executions")
        return StoredResponse(200, (), b"done")

    # Right after the crash the dead request still holds the key ...
    with pytest.raises(InFlight):
        await svc.execute("order-42", "fp", handler)
    # ... and within the lease TTL (1 s) it is free again.
    while True:
        try:
            out1 = await svc.execute("order-42", "fp", handler)
            break
        except InFlight:
            assert time.monotonic() - crashed_at < 1.5, "the crashed mark outlived its lease"
            await asyncio.sleep(0.05)
    assert not out1.replayed and out1.stored and executions == 1
    out2 = await svc.execute("order-42", "fp", handler)
    assert out2.replayed and out2.response.body == b"done" and executions == 1
    assert int(await redis.get("crash:executions") or 0) == 2
