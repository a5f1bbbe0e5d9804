"""The README's composed origin service (docs/examples/origin_service.py), end to end:
rate limit + idempotency (Redis + PostgreSQL) + a resilient httpx client to a flaky upstream."""

from __future__ import annotations

import importlib.util
import secrets
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import psycopg
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from edge_kv.origin.testing import RedisServer

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "origin_service.py"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("origin_service_example", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def flaky_payments() -> tuple[Starlette, Counter[str]]:
    """Upstream that answers 503 to the first attempt of key ``order-1`` (one blip, not
    enough failures to open the breaker)."""
    attempts: Counter[str] = Counter()

    async def charge(request: Request) -> JSONResponse:
        key = request.headers.get("idempotency-key", "")
        attempts[key] += 1
        if key == "order-1" and attempts[key] == 1:
            return JSONResponse({"error": "busy"}, status_code=503)
        body = await request.json()
        return JSONResponse({"id": f"ch_{key}", "amount": body["amount"]})

    return Starlette(routes=[Route("/charges", charge, methods=["POST"])]), attempts


@pytest.fixture
def table(pg_dsn: str) -> Iterator[str]:
    name = f"idem_example_{secrets.token_hex(4)}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{name}"')


async def test_composed_service(redis_server: RedisServer, pg_dsn: str, table: str) -> None:
    upstream, attempts = flaky_payments()
    app = _load_example().create_app(
        redis_url=redis_server.url,
        pg_dsn=pg_dsn,
        payments_url="http://payments",
        payments_transport=httpx.ASGITransport(app=upstream),
        idempotency_table=table,
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://origin") as client,
    ):
        alice = {"X-Edge-User": "alice", "Idempotency-Key": "order-1"}
        first = await client.post("/orders", json={"amount": 42}, headers=alice)
        assert first.status_code == 201, first.text
        assert first.json()["charge"] == {"id": "ch_order-1", "amount": 42}
        assert attempts["order-1"] == 2  # 503 then retried, because the call carries the key
        assert "RateLimit-Policy" in first.headers and "RateLimit" in first.headers

        replay = await client.post("/orders", json={"amount": 42}, headers=alice)
        assert replay.status_code == 201
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json() == first.json()
        assert attempts["order-1"] == 2  # the handler did not run again

        mismatch = await client.post("/orders", json={"amount": 43}, headers=alice)
        assert mismatch.status_code == 422
        assert mismatch.headers["content-type"].startswith("application/problem+json")

        # Burst of 10, refilled at 10/s per caller: alice spent 3 above; keep going until
        # refused, and never admit more than the bucket can have earned meanwhile.
        started = time.monotonic()
        admitted = 3
        for i in range(60):
            r = await client.post(
                "/orders", json={"amount": 1}, headers={"X-Edge-User": "alice", "Idempotency-Key": f"b-{i}"}
            )
            if r.status_code == 429:
                break
            assert r.status_code == 201, r.text
            admitted += 1
        else:
            pytest.fail("60 requests in a row were admitted under a 10/s limit")
        assert 10 <= admitted <= 10 + 10 * (time.monotonic() - started) + 1
        # The refusal itself (another request now could be admitted: a token accrues every
        # 100 ms, so it would race the refill).
        refused = r
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["status"] == 429
        assert f"b-{i}" not in attempts  # refused before the handler or the upstream ran

        bob = await client.post(
            "/orders", json={"amount": 5}, headers={"X-Edge-User": "bob", "Idempotency-Key": "order-1"}
        )
        assert bob.status_code == 201  # same key, other principal: no collision
        assert "Idempotent-Replayed" not in bob.headers
