"""The ASGI middleware in front of a real Starlette app, driven by httpx."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from edge_kv.origin.idempotency import (
    IdempotencyMiddleware,
    IdempotencyService,
    IdempotencyStore,
    RedisStore,
    header_principal,
)
from edge_kv.origin.testing import RedisServer


class App:
    """A payments-like app that counts how often each route really ran."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.delay = 0.0

    def count(self, name: str) -> int:
        self.calls[name] = self.calls.get(name, 0) + 1
        return self.calls[name]

    async def charge(self, request: Request) -> Response:
        n = self.count("charge")
        body = await request.json()
        await asyncio.sleep(self.delay)
        return JSONResponse({"charge": n, "amount": body["amount"]}, status_code=201, headers={"x-n": str(n)})

    async def flaky(self, request: Request) -> Response:
        n = self.count("flaky")
        if n == 1:
            return JSONResponse({"error": "upstream"}, status_code=503)
        return JSONResponse({"ok": n})

    async def crash(self, request: Request) -> Response:
        n = self.count("crash")
        if n == 1:
            raise RuntimeError("handler crashed")
        if n == 2:
            raise ValueError("a ValueError from the app is a 500, not a 400")
        return JSONResponse({"ok": n})

    async def stream(self, request: Request) -> Response:
        n = self.count("stream")

        async def gen() -> AsyncIterator[bytes]:
            for part in (b"a", b"b", str(n).encode()):
                yield part

        return StreamingResponse(gen(), media_type="text/plain")

    def starlette(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/charges", self.charge, methods=["POST", "GET"]),
                Route("/flaky", self.flaky, methods=["POST"]),
                Route("/crash", self.crash, methods=["POST"]),
                Route("/stream", self.stream, methods=["POST"]),
            ]
        )


Client = Callable[..., httpx.AsyncClient]


@pytest_asyncio.fixture
async def app_and_client(store: IdempotencyStore) -> AsyncIterator[tuple[App, Client]]:
    app = App()
    clients: list[httpx.AsyncClient] = []

    def client(**service_kw: Any) -> httpx.AsyncClient:
        mw_kw = {
            k: service_kw.pop(k) for k in ("principal", "max_body_bytes", "fail_open") if k in service_kw
        }
        asgi = IdempotencyMiddleware(app.starlette(), IdempotencyService(store, **service_kw), **mw_kw)
        c = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=asgi, raise_app_exceptions=False), base_url="http://t"
        )
        clients.append(c)
        return c

    yield app, client
    for c in clients:
        await c.aclose()


def key(k: str) -> dict[str, str]:
    return {"Idempotency-Key": k}


async def test_first_runs_repeat_replays(app_and_client: tuple[App, Client]) -> None:
    app, make = app_and_client
    c = make()
    r1 = await c.post("/charges", json={"amount": 10, "currency": "eur"}, headers=key("k1"))
    assert r1.status_code == 201 and r1.json() == {"charge": 1, "amount": 10}
    assert "idempotent-replayed" not in r1.headers
    # Same JSON document, other key order and whitespace: still a replay.
    r2 = await c.post(
        "/charges",
        content=b'{"currency": "eur",  "amount": 10}',
        headers={**key("k1"), "content-type": "application/json"},
    )
    assert r2.status_code == 201 and r2.content == r1.content
    assert r2.headers["idempotent-replayed"] == "true" and r2.headers["x-n"] == "1"
    assert app.calls["charge"] == 1


async def test_100_concurrent_requests_through_the_middleware(app_and_client: tuple[App, Client]) -> None:
    app, make = app_and_client
    app.delay = 0.2
    c = make()
    rs = await asyncio.gather(
        *(c.post("/charges", json={"amount": 1}, headers=key("burst")) for _ in range(100))
    )
    assert app.calls["charge"] == 1
    codes = sorted({r.status_code for r in rs})
    assert codes in ([201, 409], [201]), codes
    conflicts = [r for r in rs if r.status_code == 409]
    assert conflicts and all(r.headers["content-type"] == "application/problem+json" for r in conflicts)
    assert all(r.json()["status"] == 409 and int(r.headers["retry-after"]) >= 1 for r in conflicts)


async def test_wait_mode_returns_the_stored_response(app_and_client: tuple[App, Client]) -> None:
    app, make = app_and_client
    app.delay = 0.2
    c = make(in_flight="wait", poll_s=0.02)
    rs = await asyncio.gather(*(c.post("/charges", json={"amount": 2}, headers=key("w")) for _ in range(20)))
    assert app.calls["charge"] == 1
    assert {r.status_code for r in rs} == {201} and len({r.content for r in rs}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in rs) == 19


async def test_mismatch_is_422(app_and_client: tuple[App, Client]) -> None:
    app, make = app_and_client
    c = make()
    await c.post("/charges", json={"amount": 10}, headers=key("m"))
    r = await c.post("/charges", json={"amount": 11}, headers=key("m"))
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["title"] == "Unprocessable Content"
    r = await c.post("/charges?x=1", json={"amount": 10}, headers=key("m"))
    assert r.status_code == 422
    assert app.calls["charge"] == 1


async def test_in_flight_is_409(app_and_client: tuple[App, Client]) -> None:
    app, make = app_and_client
    app.delay = 0.3
    c = make()
    first = asyncio.create_task(c.post("/charges", json={"amount": 1}, headers=key("f")))
    await asyncio.sleep(0.1)
    r = await c.post("/charges", json={"amount": 1}, headers=key("f"))
    assert r.status_code == 409 and r.json()["status"] == 409
    assert (await first).status_code == 201


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({"Idempotency-Key": ""}, "empty"),
        ({"Idempotency-Key": "x" * 256}, "maximum"),
        ({"Idempotency-Key": "a b"}, "visible ASCII"),
    ],
)
async def test_bad_keys_are_400(
    app_and_client: tuple[App, Client], headers: dict[str, str], detail: str
) -> None:
    app, make = app_and_client
    r = await make().post("/charges", json={"amount": 1}, headers=headers)
    assert r.status_code == 400 and detail in r.json()["detail"]
    assert r.headers["content-type"] == "application/problem+json"
    assert "charge" not in app.calls


async def test_repeated_header_is_400(app_and_client: tuple[App, Client]) -> None:
    app, make = app_and_client
    r = await make().post(
        "/charges", json={"amount": 1}, headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
    )
    assert r.status_code == 400 and "charge" not in app.calls


async def test_too_large_body_is_413(app_and_client: tuple[App, Client]) -> None:
    app, make = app_and_client
    r = await make(max_body_bytes=100).post("/charges", json={"amount": "x" * 200}, headers=key("big"))
    assert r.status_code == 413 and r.json()["status"] == 413 and "charge" not in app.calls


async def test_5xx_and_exceptions_are_not_stored(app_and_client: tuple[App, Client]) -> None:
    app, make = app_and_client
    c = make()
    assert (await c.post("/flaky", json={}, headers=key("fl"))).status_code == 503
    r = await c.post("/flaky", json={}, headers=key("fl"))
    assert r.status_code == 200 and r.json() == {"ok": 2} and "idempotent-replayed" not in r.headers
    for _ in range(2):
        r = await c.post("/crash", json={}, headers=key("cr"))
        # Starlette's own 500 page, forwarded; not stored.
        assert r.status_code == 500 and r.text == "Internal Server Error"
    r = await c.post("/crash", json={}, headers=key("cr"))
    assert r.status_code == 200 and r.json() == {"ok": 3}
    r = await c.post("/crash", json={}, headers=key("cr"))
    assert r.headers["idempotent-replayed"] == "true" and app.calls["crash"] == 3


async def test_without_key_or_for_get_it_passes_through(app_and_client: tuple[App, Client]) -> None:
    app, make = app_and_client
    c = make()
    await c.post("/charges", json={"amount": 1})
    await c.post("/charges", json={"amount": 1})
    assert app.calls["charge"] == 2
    # GET is not in the default methods: the header is ignored and the route runs each time.
    r = await c.request("GET", "/charges", content=b'{"amount": 3}', headers=key("g"))
    r2 = await c.request("GET", "/charges", content=b'{"amount": 3}', headers=key("g"))
    assert r.status_code == r2.status_code == 201 and app.calls["charge"] == 4


async def test_principal_scopes_keys(app_and_client: tuple[App, Client]) -> None:
    app, make = app_and_client
    c = make(principal=header_principal("X-Edge-User"))
    a = await c.post("/charges", json={"amount": 1}, headers={**key("same"), "X-Edge-User": "alice"})
    b = await c.post("/charges", json={"amount": 2}, headers={**key("same"), "X-Edge-User": "bob"})
    assert a.status_code == b.status_code == 201 and app.calls["charge"] == 2
    a2 = await c.post("/charges", json={"amount": 1}, headers={**key("same"), "X-Edge-User": "alice"})
    assert a2.headers["idempotent-replayed"] == "true" and a2.json() == a.json()


async def test_bad_principal_is_400(app_and_client: tuple[App, Client]) -> None:
    app, make = app_and_client
    c = make(principal=lambda scope: "nul\x00user")
    r = await c.post("/charges", json={"amount": 1}, headers=key("p"))
    assert r.status_code == 400 and "principal" in r.json()["detail"] and "charge" not in app.calls


async def test_async_principal(app_and_client: tuple[App, Client]) -> None:
    app, make = app_and_client

    async def who(scope: Any) -> str:
        return "svc-1"

    c = make(principal=who)
    await c.post("/charges", json={"amount": 1}, headers=key("p"))
    assert (await c.post("/charges", json={"amount": 1}, headers=key("p"))).headers[
        "idempotent-replayed"
    ] == "true"
    assert app.calls["charge"] == 1


async def test_streaming_response_is_buffered_and_replayed(app_and_client: tuple[App, Client]) -> None:
    app, make = app_and_client
    c = make()
    r1 = await c.post("/stream", content=b"x", headers=key("s"))
    r2 = await c.post("/stream", content=b"x", headers=key("s"))
    assert r1.content == r2.content == b"ab1" and app.calls["stream"] == 1


async def test_store_down_fails_closed_or_open(redis_servers: Callable[[int], list[RedisServer]]) -> None:
    (server,) = redis_servers(1)
    client = aioredis.Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    server.kill()
    app = App()
    try:
        for fail_open, expected in ((False, 503), (True, 201)):
            asgi = IdempotencyMiddleware(
                app.starlette(), IdempotencyService(RedisStore(client)), fail_open=fail_open
            )
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://t") as c:
                r = await c.post("/charges", json={"amount": 1}, headers=key("down"))
            assert r.status_code == expected
        assert app.calls["charge"] == 1
    finally:
        await client.aclose()


async def test_client_gone_before_the_body_arrived_runs_nothing(store: IdempotencyStore) -> None:
    app = App()
    asgi = IdempotencyMiddleware(app.starlette(), IdempotencyService(store))
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"amo', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/charges",
        "raw_path": b"/charges",
        "query_string": b"",
        "headers": [(b"idempotency-key", b"gone"), (b"content-type", b"application/json")],
    }
    await asgi(scope, receive, send)
    assert sent == [] and "charge" not in app.calls
    # The key was never claimed: a complete retry runs.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://t") as c:
        assert (await c.post("/charges", json={"amount": 1}, headers=key("gone"))).status_code == 201


async def test_fastapi_add_middleware(redis: aioredis.Redis) -> None:
    from fastapi import FastAPI

    api = FastAPI()
    runs: list[int] = []

    @api.post("/orders", status_code=201)
    async def create(order: dict[str, Any]) -> dict[str, Any]:
        runs.append(1)
        return {"order": len(runs), **order}

    api.add_middleware(
        IdempotencyMiddleware,
        service=IdempotencyService(RedisStore(redis)),
        principal=header_principal("X-Edge-User"),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://t") as c:
        h = {**key("fa"), "X-Edge-User": "u1"}
        r1 = await c.post("/orders", json={"sku": "a"}, headers=h)
        r2 = await c.post("/orders", json={"sku": "a"}, headers=h)
        r3 = await c.post("/orders", json={"sku": "b"}, headers=h)
    assert r1.status_code == r2.status_code == 201 and r1.json() == r2.json() == {"order": 1, "sku": "a"}
    assert r2.headers["idempotent-replayed"] == "true" and r3.status_code == 422 and runs == [1]
