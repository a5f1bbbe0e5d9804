"""ResilientTransport against a flaky HTTP server this test serves itself (uvicorn on a
free port in a background thread): retried GETs succeed, POST is retried only with an
Idempotency-Key, 401 is never retried, Retry-After is honoured, the per-host breaker
opens after its threshold and closes after recovery, the bulkhead caps concurrency."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import uvicorn

from edge_kv.origin.resilience import (
    BreakerConfig,
    Bulkhead,
    BulkheadFull,
    CircuitOpenError,
    FakeClock,
    FullJitter,
    RetryPolicy,
    TieredBulkhead,
    TierLimits,
)
from edge_kv.origin.resilience.transport import ResilientTransport
from edge_kv.origin.testing import free_port

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class FlakyApp:
    """``/flaky/<id>?fail=N&status=S&retry_after=R``: the first N requests of <id> get S.
    ``/status/<code>``: always <code>. ``/health``: 503 while ``healthy`` is False.
    ``/slow?ms=M``: sleeps, tracking peak concurrency. Bodies are echoed back as JSON."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.bodies: list[bytes] = []
        self.healthy = True
        self.running = 0
        self.peak = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        path: str = scope["path"]
        q = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        self.hits[path] += 1
        self.bodies.append(body)
        status, headers = 200, [(b"content-type", b"application/json")]
        if path.startswith("/flaky/"):
            if self.hits[path] <= int(q.get("fail", "0")):
                status = int(q.get("status", "503"))
                if "retry_after" in q:
                    headers.append((b"retry-after", q["retry_after"].encode()))
        elif path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
        elif path == "/health":
            status = 200 if self.healthy else 503
        elif path == "/slow":
            self.running += 1
            self.peak = max(self.peak, self.running)
            await asyncio.sleep(int(q.get("ms", "50")) / 1000)
            self.running -= 1
        payload = json.dumps({"hits": self.hits[path], "body": body.decode()}).encode()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FlakyApp]]:
    app = FlakyApp()
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        srv.should_exit = True
        thread.join(10)


def client_for(base: str, **kw: Any) -> tuple[httpx.AsyncClient, ResilientTransport, FakeClock]:
    clock: FakeClock = kw.pop("clock", None) or FakeClock()
    retry = kw.pop("retry", None) or RetryPolicy(max_attempts=3, backoff=FullJitter(0.01, 0.05), clock=clock)
    transport = ResilientTransport(retry=retry, clock=clock, **kw)
    return httpx.AsyncClient(transport=transport, base_url=base, timeout=5.0), transport, clock


async def test_retried_get_succeeds(server: tuple[str, FlakyApp]) -> None:
    base, app = server
    client, transport, _ = client_for(base)
    async with client:
        r = await client.get("/flaky/get1?fail=2&status=503")
    assert r.status_code == 200 and r.json()["hits"] == 3
    assert app.hits["/flaky/get1"] == 3
    assert transport.retry.metrics.retries == 2


async def test_get_gives_back_the_last_response_when_retries_run_out(server: tuple[str, FlakyApp]) -> None:
    base, app = server
    client, _, _ = client_for(base)
    async with client:
        r = await client.get("/flaky/get2?fail=10&status=502")
    assert r.status_code == 502 and app.hits["/flaky/get2"] == 3


async def test_post_without_key_is_not_retried(server: tuple[str, FlakyApp]) -> None:
    base, app = server
    client, _, _ = client_for(base)
    async with client:
        r = await client.post("/flaky/post1?fail=1&status=503", json={"amount": 5})
    assert r.status_code == 503
    assert app.hits["/flaky/post1"] == 1


async def test_post_with_idempotency_key_is_retried_with_its_body(server: tuple[str, FlakyApp]) -> None:
    base, app = server
    client, _, _ = client_for(base)

    async def body() -> Any:
        yield b'{"amount":'
        yield b" 5}"

    async with client:
        r = await client.post(
            "/flaky/post2?fail=2&status=503", content=body(), headers={"Idempotency-Key": "k-1"}
        )
    assert r.status_code == 200 and app.hits["/flaky/post2"] == 3
    assert r.json()["body"] == '{"amount": 5}'  # the streamed body was replayed intact on the retry


async def test_401_is_never_retried_and_429_retry_after_is_honoured(server: tuple[str, FlakyApp]) -> None:
    base, app = server
    client, _, clock = client_for(base)
    async with client:
        r = await client.get("/status/401")
        assert r.status_code == 401 and app.hits["/status/401"] == 1
        r = await client.get("/flaky/ra?fail=1&status=429&retry_after=3")
        assert r.status_code == 200 and app.hits["/flaky/ra"] == 2
    assert clock.sleeps == [3.0]


async def test_connection_errors_are_retried_then_raised() -> None:
    client, transport, clock = client_for(f"http://127.0.0.1:{free_port()}")
    async with client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/nothing-listens-here")
    assert transport.retry.metrics.attempts == 3 and len(clock.sleeps) == 2


async def test_breaker_opens_after_threshold_and_closes_after_recovery(server: tuple[str, FlakyApp]) -> None:
    base, app = server
    changes: list[tuple[str, str, str]] = []
    cfg = BreakerConfig(
        window_size=4, minimum_calls=4, failure_rate_threshold=50, wait_in_open=5, half_open_probes=1
    )
    client, transport, clock = client_for(
        base, breaker_config=cfg, on_state_change=lambda *c: changes.append(c)
    )
    app.healthy = False
    before = app.hits["/health"]
    async with client:
        r = await client.get("/health")  # 3 attempts, all 503
        assert r.status_code == 503
        with pytest.raises(CircuitOpenError):
            await client.get("/health")  # 4th attempt opens it; the retry stops at once
        assert app.hits["/health"] - before == 4
        sleeps = len(clock.sleeps)
        with pytest.raises(CircuitOpenError):
            await client.get("/health")
        assert app.hits["/health"] - before == 4 and len(clock.sleeps) == sleeps
        # Other hosts have their own breaker.
        assert (await client.get(f"http://localhost:{base.rsplit(':', 1)[1]}/status/204")).status_code == 204
        app.healthy = True
        clock.advance(5)
        r = await client.get("/health")  # the half-open probe succeeds
        assert r.status_code == 200
    breaker = transport.breakers[base]
    assert breaker.state == "closed"
    assert [c[1:] for c in changes] == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


async def test_bulkhead_caps_concurrent_requests_until_bodies_are_closed(
    server: tuple[str, FlakyApp],
) -> None:
    base, app = server
    bulkhead = Bulkhead("upstream", 2, max_queue=20)
    client, _, _ = client_for(base, bulkhead=bulkhead)
    app.peak = 0
    async with client:
        responses = await asyncio.gather(*(client.get("/slow?ms=30") for _ in range(8)))
        assert all(r.status_code == 200 for r in responses)
        assert app.peak <= 2
        assert bulkhead.metrics.peak_in_use == 2
        assert bulkhead.metrics.in_use == 0
        async with client.stream("GET", "/slow?ms=1") as resp:
            assert bulkhead.metrics.in_use == 1  # held while the body is open
            await resp.aread()
        assert bulkhead.metrics.in_use == 0


async def test_tier_is_chosen_by_request_extension(server: tuple[str, FlakyApp]) -> None:
    base, _ = server
    tiers = TieredBulkhead(
        "up", {"critical": TierLimits(2), "optional": TierLimits(1)}, default_tier="critical"
    )
    client, _, _ = client_for(base, bulkhead=tiers)
    async with client, client.stream("GET", "/slow?ms=1", extensions={"edge_kv_tier": "optional"}) as held:
        with pytest.raises(BulkheadFull):
            await client.get("/slow?ms=1", extensions={"edge_kv_tier": "optional"})
        assert (await client.get("/slow?ms=1")).status_code == 200  # critical (default) unaffected
        await held.aread()


async def test_the_given_retry_policy_is_not_mutated(server: tuple[str, FlakyApp]) -> None:
    """The transport installs its HTTP classifiers on a copy: the caller's policy keeps its
    own (so sharing it with non-HTTP code stays safe) while budget and metrics are shared."""
    base, app = server
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=3, backoff=FullJitter(0.01, 0.05), clock=clock)
    before = (policy.classify, policy.classify_result, policy.discard_result)
    client, transport, _ = client_for(base, retry=policy, clock=clock)
    async with client:
        r = await client.get("/flaky/nomutate?fail=1&status=503")
    assert r.status_code == 200 and app.hits["/flaky/nomutate"] == 2
    assert (policy.classify, policy.classify_result, policy.discard_result) == before
    assert policy.classify_result is None and policy.discard_result is None
    assert transport.retry is not policy
    assert policy.metrics.retries == 1  # metrics (and any budget) are shared with the copy

    async def five_hundred_and_three() -> int:
        return 503

    assert await policy.call(five_hundred_and_three) == 503  # not retried as an HTTP status here
    assert policy.metrics.retries == 1
