"""``scripts/dev --origin URL``: the gateway as a transparent caching proxy in front of any
origin (the configuration ``scripts/origin_proxy.py`` writes), through the real host."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

pytestmark = pytest.mark.host_only
ROOT = Path(__file__).resolve().parents[2]
SEEN: list[dict[str, object]] = []


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    request = Request(scope, receive)
    body = await request.body()
    record: dict[str, object] = {
        "method": request.method,
        "path": request.url.path,
        "body": body.decode(),
        "headers": dict(request.headers),
    }
    SEEN.append(record)
    status = int(request.query_params.get("status", "200"))
    headers = {"x-origin-header": "kept", "cache-control": request.query_params.get("cc", "no-store")}
    response = Response(
        json.dumps(record).encode() if status not in (204, 304) else b"",
        status_code=status,
        headers=headers,
        media_type="application/json",
    )
    await response(scope, receive, send)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def proxy_url(worker_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from hostproc import HostProcess

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(echo_app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    out = tmp_path_factory.mktemp("origin-proxy")
    built_main = worker_config.read_text().split('main = "', 1)[1].split('"', 1)[0]
    written = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "origin_proxy.py"),
            f"http://127.0.0.1:{port}",
            "--out",
            str(out),
            "--main",
            built_main,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    host = HostProcess(Path(written), tmp_path_factory.mktemp("origin-proxy-persist"))
    try:
        yield host.start()
    finally:
        host.close()
        server.should_exit = True
        thread.join(5)


@pytest.fixture
async def c(proxy_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=proxy_url, timeout=30) as client:
        yield client


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "PURGE"])
async def test_every_method_and_body_passes_through(c: httpx.AsyncClient, method: str) -> None:
    body = b"" if method in ("GET", "OPTIONS") else f"payload for {method}".encode()
    r = await c.request(method, f"/any/{method.lower()}", content=body, headers={"x-client": "yes"})
    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["method"] == method and seen["path"] == f"/any/{method.lower()}"
    assert seen["body"] == body.decode() and seen["headers"]["x-client"] == "yes"
    assert r.headers["x-origin-header"] == "kept" and "edge-kv" in r.headers["via"]


@pytest.mark.parametrize("status", [201, 202, 299, 404, 418, 451, 500, 503, 599])
async def test_status_codes_pass_through(c: httpx.AsyncClient, status: int) -> None:
    r = await c.get(f"/status?status={status}")
    assert r.status_code == status


async def test_the_cache_applies_rfc_9111(c: httpx.AsyncClient) -> None:
    first = await c.get("/cached?cc=max-age%3D60")
    second = await c.get("/cached?cc=max-age%3D60")
    assert first.headers["x-cache"] == "MISS" and second.headers["x-cache"] == "HIT"
    assert (await c.get("/private?cc=private%2C%20max-age%3D60")).headers["x-cache"] == "BYPASS"


def test_a_bad_origin_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "origin_proxy.py"),
            "ftp://example.com/x",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "--origin must be http(s)://host[:port]" in r.stderr
