"""RateLimitMiddleware on a Starlette app and on a plain ASGI app (httpx ASGITransport)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from edge_kv.core.ratelimit import SlidingLog, TokenBucket
from edge_kv.origin._asgi import Message, Receive, Scope, Send
from edge_kv.origin.ratelimit import RateLimiter, RateLimitMiddleware, header_key
from edge_kv.origin.testing import RedisServer


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello", headers={"x-app": "1"})


def starlette_app(limiter: RateLimiter, **kwargs: object) -> Starlette:
    app = Starlette(routes=[Route("/", hello)])
    app.add_middleware(RateLimitMiddleware, limiter=limiter, **kwargs)  # type: ignore[arg-type]
    return app


async def plain_app(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"plain"})


def client(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")  # type: ignore[arg-type]


async def test_starlette_429_with_headers_and_problem(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(
        redis, [TokenBucket(3, 1, name="per-second"), SlidingLog(100, 3600, name="per-hour")]
    )
    async with client(starlette_app(limiter)) as http:
        ok = [await http.get("/") for _ in range(3)]
        refused = await http.get("/")
    for i, r in enumerate(ok):
        assert r.status_code == 200 and r.text == "hello" and r.headers["x-app"] == "1"
        assert r.headers["ratelimit-policy"] == '"per-second";q=3;w=3, "per-hour";q=100;w=3600'
        assert r.headers["ratelimit"].startswith(f'"per-second";r={2 - i};t=')
        assert "retry-after" not in r.headers
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["ratelimit"] == '"per-second";r=0;t=3'
    assert "ratelimit-policy" in refused.headers
    body = json.loads(refused.content)
    assert body["status"] == 429 and body["title"] == "Too Many Requests" and body["type"] == "about:blank"
    assert "per-second" in body["detail"] and body["instance"] == "/"


async def test_plain_asgi_app_and_key_function(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis, TokenBucket(2, 0.5, name="k"))
    app = RateLimitMiddleware(plain_app, limiter, key_func=header_key("x-api-key", fallback=None))
    async with client(app) as http:
        a = [(await http.get("/", headers={"x-api-key": "alice"})).status_code for _ in range(3)]
        b = [(await http.get("/", headers={"x-api-key": "bob"})).status_code for _ in range(2)]
        anonymous = [await http.get("/") for _ in range(5)]
    assert a == [200, 200, 429]
    assert b == [200, 200]  # another key has its own bucket
    # key_func returned None: not limited, no headers
    assert all(r.status_code == 200 and "ratelimit" not in r.headers for r in anonymous)
    assert await redis.exists("edge_kv:rl:{x-api-key:alice}:k:tb") == 1


async def test_cost_function_and_bad_key(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis, TokenBucket(5, 1, name="k"))
    app = RateLimitMiddleware(
        plain_app,
        limiter,
        key_func=header_key("x-api-key", fallback=None),
        cost_func=lambda scope: 5 if scope["method"] == "POST" else 1,
    )
    async with client(app) as http:
        assert (await http.post("/", headers={"x-api-key": "a"})).status_code == 200
        assert (await http.get("/", headers={"x-api-key": "a"})).status_code == 429
        too_long = await http.get("/", headers={"x-api-key": "x" * 600})
    assert too_long.status_code == 400
    assert too_long.headers["content-type"] == "application/problem+json"
    assert json.loads(too_long.content)["status"] == 400
    assert await redis.dbsize() == 1


async def test_non_http_scopes_pass_through(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis, TokenBucket(1, 1))
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        pass

    await RateLimitMiddleware(app, limiter)({"type": "lifespan"}, receive, send)
    assert seen == ["lifespan"]
    assert await redis.dbsize() == 0


def test_constructor_checks() -> None:
    with pytest.raises(ValueError):
        RateLimitMiddleware(plain_app, object())  # type: ignore[arg-type]


@pytest.mark.parametrize("failure", ["killed", "paused"])
@pytest.mark.parametrize("fail_open", [True, False])
async def test_dead_redis_fail_open_or_closed_within_timeout(
    redis_servers: Callable[[int], list[RedisServer]], failure: str, fail_open: bool
) -> None:
    (server,) = redis_servers(1)
    redis = aioredis.Redis.from_url(server.url)
    limiter = RateLimiter(redis, TokenBucket(5, 1, name="k"), timeout=0.3, fail_open=fail_open)
    app = starlette_app(limiter)
    try:
        async with client(app) as http:
            assert (await http.get("/")).status_code == 200  # warm connection
            server.kill() if failure == "killed" else server.pause()
            for _ in range(3):
                start = time.monotonic()
                r = await http.get("/")
                elapsed = time.monotonic() - start
                assert elapsed < 0.3 + 0.5, elapsed
                if fail_open:
                    assert r.status_code == 200 and r.text == "hello"
                    assert "ratelimit" not in r.headers
                else:
                    assert r.status_code == 503
                    assert r.headers["retry-after"] == "1"
                    assert json.loads(r.content)["status"] == 503
    finally:
        server.resume()
        await redis.aclose()
