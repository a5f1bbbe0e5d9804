"""The edge outbox end to end: the reference Worker's ``OutboxDemo`` objects write their
state and an outbox entry in one transaction and deliver from their alarms, signed, to an
origin ``EdgeOutboxEndpoint`` (this test serves it with uvicorn) that applies each event in
PostgreSQL once (``PostgresDeduplicator.process_once``).

The scenario: 31 events across 3 objects while the origin is not listening; the origin
comes up (and "loses" some answers: it commits the effect, then answers 503, so the edge
redelivers); the host is stopped mid-delivery and restarted on the same state; one poison
event is refused (422) and dead-lettered. Every other event is applied exactly once, in
order per object, and nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn

from edge_kv.core.httpsig import Keyring
from edge_kv.origin.edge_outbox import EdgeEvent, EdgeOutboxEndpoint, EventRejected
from edge_kv.origin.httpsig import MemoryNonceStore
from edge_kv.origin.idempotency import PostgresDeduplicator

pytestmark = pytest.mark.host_only

PG_DSN = os.environ.get("EDGE_KV_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
SIGNING = {"outbox-old": "33" * 32, "outbox-2026": "0123456789abcdef" * 4}  # the last one signs
OBJECTS = ("alpha", "bravo", "charlie")
PER_OBJECT = 10
POISON = ("bravo", 5)  # the 5th event of bravo is refused by the handler


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def pg_connect() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    conn = await psycopg.AsyncConnection.connect(PG_DSN)
    try:
        yield conn
    finally:
        await conn.close()


class Origin:
    """The origin: ``EdgeOutboxEndpoint`` behind a wrapper that answers 503 after the first
    delivery of some events (the effect committed, the answer "lost")."""

    def __init__(self, effects: str, dedup_table: str) -> None:
        self.port = free_port()
        self.effects = effects
        self.delivered: list[str] = []  # event ids, every delivery that reached the handler's wrapper
        self.lost: set[str] = set()
        self.lock = threading.Lock()
        dedup = PostgresDeduplicator(pg_connect, consumer="edge-outbox-test", table=dedup_table)
        self.dedup = dedup
        self.endpoint = EdgeOutboxEndpoint(
            self.handle,
            keyring=Keyring.from_secrets({k: bytes.fromhex(v) for k, v in SIGNING.items()}),
            nonce_store=MemoryNonceStore(),
            dedup=dedup,
        )
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    async def handle(self, event: EdgeEvent, conn: psycopg.AsyncConnection[Any]) -> None:
        if event.payload["data"].get("poison"):
            raise EventRejected(f"event {event.id} is poison")
        await conn.execute(
            f"INSERT INTO {self.effects} (event_id, source, seq, n, topic) VALUES (%s, %s, %s, %s, %s)",
            (event.id, event.source, event.seq, event.payload["n"], event.topic),
        )

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.endpoint(scope, receive, send)
            return
        event_id = next((v.decode() for k, v in scope["headers"] if k == b"x-edge-event-id"), "")
        with self.lock:
            self.delivered.append(event_id)
            lose = event_id and event_id not in self.lost and len(self.delivered) % 4 == 2
            if lose:
                self.lost.add(event_id)
        if not lose:
            await self.endpoint(scope, receive, send)
            return
        messages: list[Any] = []

        async def keep(message: Any) -> None:
            messages.append(message)

        await self.endpoint(scope, receive, keep)
        if messages[0]["status"] != 200:  # only a committed effect's answer is "lost"
            for message in messages:
                await send(message)
            return
        await send({"type": "http.response.start", "status": 503, "headers": [(b"retry-after", b"0")]})
        await send({"type": "http.response.body", "body": b"answer lost on purpose"})

    def start(self) -> None:
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off", interface="asgi3"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started, "origin did not start"

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(5)


@pytest.fixture
def tables() -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:10]
    effects, dedup = f"outbox_effects_{suffix}", f"outbox_dedup_{suffix}"
    try:
        conn = psycopg.connect(PG_DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {PG_DSN}: {exc}")
    with conn:
        conn.execute(
            f"CREATE TABLE {effects} (id bigserial PRIMARY KEY, event_id text NOT NULL,"
            " source text NOT NULL, seq int NOT NULL, n int NOT NULL, topic text NOT NULL)"
        )
        yield effects, dedup
        conn.execute(f"DROP TABLE IF EXISTS {effects}")
        conn.execute(f"DROP TABLE IF EXISTS {dedup}")


def effects_rows(table: str) -> list[tuple[str, str, int, int]]:
    with psycopg.connect(PG_DSN) as conn:
        rows = conn.execute(f"SELECT event_id, source, seq, n FROM {table} ORDER BY id").fetchall()
    return [(str(a), str(b), int(c), int(d)) for a, b, c, d in rows]


def outbox_config(worker_config: Path, directory: Path, origin_port: int) -> Path:
    config = directory / "wrangler.toml"
    config.write_text(worker_config.read_text())
    dev_vars = {
        "EDGE_KV_OUTBOX_URL": f"http://127.0.0.1:{origin_port}/edge-events",
        "EDGE_KV_SIGNING_KEYS": json.dumps(SIGNING),
        "EDGE_KV_OUTBOX_BACKOFF_BASE_MS": "150",
        "EDGE_KV_OUTBOX_BACKOFF_CAP_MS": "600",
        "EDGE_KV_OUTBOX_MAX_ATTEMPTS": "200",
        "EDGE_KV_OUTBOX_TIMEOUT_MS": "3000",
    }
    (directory / ".dev.vars").write_text("".join(f"{k}='{v}'\n" for k, v in dev_vars.items()))
    return config


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_outbox_survives_origin_outage_and_host_restart(
    worker_config: Path, tmp_path: Path, tables: tuple[str, str]
) -> None:
    from hostproc import HostProcess

    effects, dedup_table = tables
    origin = Origin(effects, dedup_table)
    asyncio.run(origin.dedup.create_schema())
    config = outbox_config(worker_config, tmp_path, origin.port)
    persist = tmp_path / "persist"
    host = HostProcess(config, persist, "--test-scheduled")
    second: HostProcess | None = None
    try:
        url = host.start()
        with httpx.Client(base_url=url, timeout=30) as client:
            expected: dict[str, list[int]] = {name: [] for name in OBJECTS}
            for i in range(1, PER_OBJECT + 1):
                for name in OBJECTS:
                    payload: dict[str, Any] = {"i": i}
                    if (name, i) == POISON:
                        payload["poison"] = True
                    r = client.post(f"/outbox/{name}/events", json={"topic": "demo.tick", "payload": payload})
                    assert r.status_code == 201, r.text
                    assert r.json()["n"] == i
                    if (name, i) != POISON:
                        expected[name].append(i)
            expected["bravo"].append(PER_OBJECT + 1)  # one more, so bravo has 10 good events too
            r = client.post("/outbox/bravo/events", json={"topic": "demo.tick", "payload": {"i": 11}})
            assert r.status_code == 201, r.text

            # The origin is down: attempts fail, nothing is lost, the alarm is armed.
            def failing() -> bool:
                s = client.get("/outbox/alpha").json()
                return bool(s["pending"]) and s["pending"][0]["attempts"] >= 2

            wait_for(failing, 10, "attempts against the dead origin")
            status = client.get("/outbox/alpha").json()
            assert len(status["pending"]) == PER_OBJECT and status["alarm"] is not None
            assert (
                "Origin" in status["pending"][0]["last_error"]
                or "reach" in status["pending"][0]["last_error"]
            )

        origin.start()
        wait_for(lambda: len(effects_rows(effects)) >= 4, 15, "the first deliveries")
        host.stop()  # mid-delivery
        applied_before_restart = len(effects_rows(effects))
        assert applied_before_restart < 30, (
            "everything was delivered before the restart: the test proves less"
        )

        second = HostProcess(config, persist, "--test-scheduled")
        url = second.start()
        # No poking: the persisted alarms fire on their own after the restart.
        wait_for(lambda: len(effects_rows(effects)) >= 30, 30, "every event after the restart")
        with httpx.Client(base_url=url, timeout=30) as client:
            wait_for(lambda: not client.get("/outbox/bravo").json()["pending"], 10, "bravo's outbox to drain")
            statuses = {name: client.get(f"/outbox/{name}").json() for name in OBJECTS}
        time.sleep(0.5)  # nothing else may arrive
        rows = effects_rows(effects)

        ids = [r[0] for r in rows]
        assert len(ids) == len(set(ids)) == 30, "an effect ran twice or is missing"
        for name in OBJECTS:
            mine = [r for r in rows if r[1] == name]
            assert [r[3] for r in mine] == expected[name], f"{name}: effects out of order or missing"
            seqs = [r[2] for r in mine]
            assert seqs == sorted(seqs)
            assert not statuses[name]["pending"]
        assert statuses["alpha"]["dead"] == [] and statuses["charlie"]["dead"] == []
        (dead,) = statuses["bravo"]["dead"]
        assert dead["seq"] == POISON[1] and dead["attempts"] == 1 and "422" in dead["last_error"]
        # Lost answers were redelivered and answered 2xx without a second effect.
        assert origin.lost and len(origin.delivered) > len(set(origin.delivered))

        # Only signed deliveries are accepted.
        r = httpx.post(f"http://127.0.0.1:{origin.port}/edge-events", json={"id": "x"})
        assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
    finally:
        host.close()
        if second is not None:
            second.close()
        origin.stop()
