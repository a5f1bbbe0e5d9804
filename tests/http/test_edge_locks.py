"""Edge locks through the offline host: mutual exclusion, alarm expiry, owners, FIFO, restarts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hostproc import HostProcess
from test_edge_limits import AUTH

pytestmark = pytest.mark.host_only

MAX_TTL_MS = 10_000  # EDGE_KV_LOCK_MAX_TTL_MS in the test .dev.vars


@pytest.fixture
async def api(service_host: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service_host, timeout=60, headers=AUTH) as c:
        yield c


async def acquire(api: httpx.AsyncClient, resource: str, **body: Any) -> httpx.Response:
    return await api.post(f"/locks/{resource}/acquire", json={"ttl_ms": 5000, **body})


async def status(api: httpx.AsyncClient, resource: str) -> dict[str, Any]:
    r = await api.get(f"/locks/{resource}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


class FencedCounter:
    """Guarded storage as the origin keeps it: refuses a token lower than the highest seen,
    and notices two writers inside the critical section at once."""

    def __init__(self) -> None:
        self.highest = 0
        self.value = 0
        self.inside: int | None = None
        self.overlaps = 0
        self.stale = 0

    async def critical_section(self, token: int) -> None:
        if self.inside is not None:
            self.overlaps += 1
        self.inside = token
        if token < self.highest:
            self.stale += 1
        else:
            self.highest = token
            self.value += 1
        await asyncio.sleep(0.01)
        if self.inside != token:
            self.overlaps += 1
        self.inside = None


async def test_sixteen_acquirers_never_hold_at_once(api: httpx.AsyncClient) -> None:
    counter = FencedCounter()
    tokens: list[int] = []
    rounds = 2

    async def worker() -> None:
        for _ in range(rounds):
            r = await acquire(api, "contended", wait_ms=10_000, poll_ms=50)
            assert r.status_code == 200, r.text
            lease = r.json()
            tokens.append(lease["token"])
            await counter.critical_section(lease["token"])
            r = await api.post("/locks/contended/release", json={"owner": lease["owner"]})
            assert r.status_code == 200, r.text

    await asyncio.gather(*(worker() for _ in range(16)))
    assert counter.overlaps == 0 and counter.stale == 0
    assert counter.value == 16 * rounds
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
    st = await status(api, "contended")
    assert st["held"] is False and st["last_token"] == tokens[-1] and st["waiters"] == 0


async def test_abandoned_lease_is_freed_by_the_alarm(api: httpx.AsyncClient) -> None:
    r = await acquire(api, "abandoned", ttl_ms=800)
    assert r.status_code == 200
    first = r.json()
    st = await status(api, "abandoned")
    assert st["held"] and st["stored_lease"] and st["token"] == first["token"]
    deadline = time.monotonic() + 10
    while (await status(api, "abandoned"))["stored_lease"]:
        assert time.monotonic() < deadline, "the alarm never cleared the expired lease"
        await asyncio.sleep(0.2)
    # The lease was removed from storage by the alarm, not just treated as expired on read.
    r = await acquire(api, "abandoned")
    assert r.status_code == 200 and r.json()["token"] == first["token"] + 1
    # The old holder is out: its release is refused.
    r = await api.post("/locks/abandoned/release", json={"owner": first["owner"]})
    assert r.status_code == 409


async def test_only_the_owner_extends_and_releases(api: httpx.AsyncClient) -> None:
    lease = (await acquire(api, "owned", owner="origin-owner-0001")).json()
    assert lease["owner"] == "origin-owner-0001"
    r = await acquire(api, "owned")
    assert r.status_code == 409 and r.json()["reason"] == "locked"
    for path, body in [
        ("release", {"owner": "someone-else-0001"}),
        ("extend", {"owner": "someone-else-0001", "ttl_ms": 5000}),
    ]:
        r = await api.post(f"/locks/owned/{path}", json=body)
        assert r.status_code == 409, r.text
        assert r.headers["content-type"] == "application/problem+json"
    st = await status(api, "owned")
    assert st["held"] and st["token"] == lease["token"] and st["expires_at_ms"] == lease["expires_at_ms"]
    r = await api.post("/locks/owned/extend", json={"owner": lease["owner"], "ttl_ms": 9000})
    assert r.status_code == 200
    assert r.json()["token"] == lease["token"] and r.json()["expires_at_ms"] > lease["expires_at_ms"]
    r = await api.post("/locks/owned/release", json={"owner": lease["owner"]})
    assert r.status_code == 200
    r = await api.post("/locks/owned/release", json={"owner": lease["owner"]})
    assert r.status_code == 409


async def test_waiters_are_served_first_come_first_served(api: httpx.AsyncClient) -> None:
    holder = (await acquire(api, "fifo")).json()
    order: list[str] = []

    async def waiter(name: str, delay: float) -> dict[str, Any]:
        await asyncio.sleep(delay)
        r = await acquire(api, "fifo", owner=f"waiter-{name}-0000", wait_ms=8000, poll_ms=20)
        assert r.status_code == 200, r.text
        order.append(name)
        lease: dict[str, Any] = r.json()
        await asyncio.sleep(0.2)
        assert (await api.post("/locks/fifo/release", json={"owner": lease["owner"]})).status_code == 200
        return lease

    tasks = [asyncio.create_task(waiter(n, d)) for n, d in (("b", 0.0), ("c", 0.4), ("d", 0.8))]
    await asyncio.sleep(1.5)
    assert (await status(api, "fifo"))["waiters"] == 3
    assert (await api.post("/locks/fifo/release", json={"owner": holder["owner"]})).status_code == 200
    leases = await asyncio.gather(*tasks)
    assert order == ["b", "c", "d"]
    assert [lease["token"] for lease in leases] == [holder["token"] + i for i in (1, 2, 3)]


async def test_wait_times_out_with_409_and_leaves_the_queue(api: httpx.AsyncClient) -> None:
    holder = (await acquire(api, "timeout")).json()
    t0 = time.monotonic()
    r = await acquire(api, "timeout", wait_ms=600, poll_ms=50)
    assert r.status_code == 409 and 0.5 < time.monotonic() - t0 < 5
    st = await status(api, "timeout")
    assert st["token"] == holder["token"] and st["waiters"] == 0


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/locks/bad/acquire", {"ttl_ms": 0}),
        ("/locks/bad/acquire", {"ttl_ms": -1}),
        ("/locks/bad/acquire", {"ttl_ms": MAX_TTL_MS + 1}),
        ("/locks/bad/acquire", {"ttl_ms": 1.5}),
        ("/locks/bad/acquire", {}),
        ("/locks/bad/acquire", {"ttl_ms": 1000, "wait_ms": -1}),
        ("/locks/bad/acquire", {"ttl_ms": 1000, "wait_ms": 10_001}),
        ("/locks/bad/acquire", {"ttl_ms": 1000, "owner": "short"}),
        ("/locks/bad/acquire", {"ttl_ms": 1000, "poll_ms": 0}),
        ("/locks/bad/acquire", {"ttl_ms": 1000, "colour": "red"}),
        ("/locks/bad/acquire", [1]),
        ("/locks/bad/extend", {"owner": "owner-000001", "ttl_ms": 0}),
        ("/locks/bad/release", {}),
        ("/locks/" + "r" * 300 + "/acquire", {"ttl_ms": 1000}),
    ],
)
async def test_bad_input_is_400_and_changes_nothing(api: httpx.AsyncClient, path: str, body: Any) -> None:
    r = await api.post(path, json=body)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json" and r.json()["status"] == 400
    st = await status(api, "bad")
    assert st["last_token"] == 0 and st["waiters"] == 0 and not st["stored_lease"]


async def test_malformed_json_is_400(api: httpx.AsyncClient) -> None:
    r = await api.post(
        "/locks/bad/acquire", content=b'{"ttl_ms": ', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["status"] == 400
    assert (await status(api, "bad"))["last_token"] == 0


@pytest.mark.slow
async def test_tokens_keep_increasing_across_host_restarts(
    service_config: Path, tmp_path: Path, start_host: Callable[..., HostProcess]
) -> None:
    persist = tmp_path / "restart-persist"
    seen: list[int] = []
    for _ in range(2):
        host = start_host(persist=persist, config=service_config)
        url = host.start()
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=AUTH) as c:
            for _ in range(2):
                lease = (await acquire(c, "durable")).json()
                seen.append(lease["token"])
                assert (
                    await c.post("/locks/durable/release", json={"owner": lease["owner"]})
                ).status_code == 200
        host.stop()
    assert seen == [1, 2, 3, 4]
