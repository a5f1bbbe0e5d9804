"""A holder frozen with SIGSTOP past its TTL cannot write after a successor took over."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import redis.asyncio as aioredis

from edge_kv.origin.locks import FencedStore
from edge_kv.origin.locks.redis_lock import RedisLock
from edge_kv.origin.testing import RedisServer

HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    import redis.asyncio as aioredis
    from edge_kv.origin.locks import FencedStore, StaleFencingToken
    from edge_kv.origin.locks.redis_lock import RedisLock

    async def main(url):
        client = aioredis.Redis.from_url(url)
        lock = RedisLock(client, "account:7", ttl_ms=300)
        token = await lock.acquire()
        print("token", token, flush=True)
        sys.stdin.readline()  # the test freezes us here, then lets us go on
        try:
            await FencedStore(client).set("account:7", token, "balance", "written-by-old-holder")
            print("accepted", flush=True)
        except StaleFencingToken as exc:
            print("refused", exc.highest, flush=True)
        await client.aclose()

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_sigstopped_holder_write_is_refused(redis_server: RedisServer, redis: aioredis.Redis) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, redis_server.url, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        old_token = int(line.split()[1])
        os.kill(proc.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        successor = RedisLock(redis, "account:7", ttl_ms=5000, retry_delay_ms=(10, 30))
        new_token = await successor.acquire(blocking_timeout=3)  # after the old lease expired
        assert time.monotonic() - stopped_at >= 0.2
        assert new_token > old_token
        await FencedStore(redis).set("account:7", new_token, "balance", "written-by-new-holder")
        os.kill(proc.pid, signal.SIGCONT)
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        out = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert out.split() == ["refused", str(new_token)]
        assert await redis.get("balance") == b"written-by-new-holder"
        await successor.release()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
