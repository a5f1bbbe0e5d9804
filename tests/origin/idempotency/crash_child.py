"""Child process for the crash test: claims a key, performs the side effect (INCR a Redis
counter), then dies with os._exit before the response can be stored or the mark released.

    python crash_child.py KIND REDIS_URL PG_DSN TABLE KEY
"""

from __future__ import annotations

import asyncio
import os
import sys

import redis.asyncio as aioredis

from edge_kv.origin.idempotency import (
    IdempotencyService,
    IdempotencyStore,
    LayeredStore,
    PgPool,
    PostgresStore,
    RedisStore,
    StoredResponse,
)


async def main(kind: str, redis_url: str, dsn: str, table: str, key: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    pool = PgPool(dsn, size=2)
    store: IdempotencyStore
    if kind == "redis":
        store = RedisStore(client)
    elif kind == "postgres":
        store = PostgresStore(pool.connection, table=table)
    else:
        store = LayeredStore(
            RedisStore(client, prefix="edge_kv:idem-cache:"), PostgresStore(pool.connection, table=table)
        )
    svc = IdempotencyService(store, lease_s=1.0)

    async def handler() -> StoredResponse:
        await client.incr("crash:executions")
        print("executed", flush=True)
        os._exit(17)  # the crash: after the effect, before the response is stored

    await svc.execute(key, "fp", handler)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
