"""A FastAPI service behind the edge, composed from edge_kv.origin.

* every request is rate limited per caller (10/s burst, 1000/h), with the same
  ``RateLimit-Policy`` / ``RateLimit`` / ``Retry-After`` headers the edge sends;
* ``POST /orders`` is idempotent (``Idempotency-Key``: Redis first, PostgreSQL authoritative);
* the payment provider is called through an httpx client whose transport applies a bulkhead,
  a per-host circuit breaker and budgeted retries (only idempotent requests, or requests
  carrying an ``Idempotency-Key``, are retried).

Run it:  REDIS_URL=redis://127.0.0.1:6379/0 PG_DSN=postgresql://postgres@127.0.0.1/test \
         PAYMENTS_URL=http://127.0.0.1:9000 uvicorn --factory docs.examples.origin_service:create_app
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import redis.asyncio as aioredis
from fastapi import FastAPI, Request

from edge_kv.core import SlidingLog, TokenBucket
from edge_kv.origin.idempotency import (
    IdempotencyMiddleware,
    IdempotencyService,
    LayeredStore,
    PgPool,
    PostgresStore,
    RedisStore,
    header_principal,
)
from edge_kv.origin.ratelimit import RateLimiter, RateLimitMiddleware, header_key
from edge_kv.origin.resilience import BreakerConfig, RetryBudget, RetryPolicy, TieredBulkhead
from edge_kv.origin.resilience.transport import ResilientTransport


def payments_client(base_url: str, inner: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """An httpx client that retries at most 10% extra traffic and stops at an open breaker."""
    transport = ResilientTransport(
        inner,
        retry=RetryPolicy(max_attempts=3, max_total=2.0, budget=RetryBudget(0.1)),
        breaker_config=BreakerConfig(
            window="count", window_size=20, minimum_calls=5, failure_rate_threshold=50, wait_in_open=5
        ),
        bulkhead=TieredBulkhead("payments"),
    )
    return httpx.AsyncClient(base_url=base_url, transport=transport, timeout=2.0)


def create_app(
    *,
    redis_url: str | None = None,
    pg_dsn: str | None = None,
    payments_url: str | None = None,
    payments_transport: httpx.AsyncBaseTransport | None = None,
    idempotency_table: str = "edge_kv_idempotency_keys",
) -> FastAPI:
    redis_client = aioredis.Redis.from_url(redis_url or os.environ["REDIS_URL"])
    pool = PgPool(pg_dsn or os.environ["PG_DSN"], size=5)
    pg_store = PostgresStore(pool.connection, table=idempotency_table)
    payments = payments_client(
        payments_url or os.environ.get("PAYMENTS_URL", "http://payments"), payments_transport
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await pg_store.create_schema()
        yield
        await payments.aclose()
        await pool.close()
        await redis_client.aclose()

    app = FastAPI(lifespan=lifespan)
    limiter = RateLimiter(
        redis_client,
        [TokenBucket(10, 10, name="per-second"), SlidingLog(1000, 3600, name="per-hour")],
        timeout=0.25,
        fail_open=False,
    )
    # Middleware added last runs first: the limiter refuses before any idempotency work.
    app.add_middleware(
        IdempotencyMiddleware,
        service=IdempotencyService(LayeredStore(RedisStore(redis_client), pg_store), ttl_s=24 * 3600),
        principal=header_principal("X-Edge-User"),
    )
    app.add_middleware(RateLimitMiddleware, limiter=limiter, key_func=header_key("X-Edge-User"))

    @app.post("/orders", status_code=201)
    async def create_order(request: Request) -> dict[str, Any]:
        order = await request.json()
        key = request.headers.get("Idempotency-Key", "")
        # The payment call carries the same key, so the transport may retry it safely.
        charge = await payments.post(
            "/charges", json={"amount": order["amount"]}, headers={"Idempotency-Key": key} if key else {}
        )
        charge.raise_for_status()
        return {"order": order, "charge": charge.json()}

    return app
