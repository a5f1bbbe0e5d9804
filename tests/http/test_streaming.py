"""Bodies stream through the host in both directions, as they do on Cloudflare.

``GET /__stream`` produces its body from Python one chunk at a time (``src/debug_routes.py``);
``POST /echo-stream`` answers one line per request-body chunk while the body is still arriving.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from rawhttp import RawConnection, build_request


async def test_first_chunk_arrives_before_the_last_is_produced(client: httpx.AsyncClient) -> None:
    interval = 0.3
    arrivals: list[tuple[float, dict[str, int]]] = []
    start = time.monotonic()
    async with client.stream("GET", f"/__stream?chunks=3&interval_ms={int(interval * 1000)}") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        async for line in response.aiter_lines():
            if line:
                arrivals.append((time.monotonic() - start, json.loads(line)))
    assert [data["chunk"] for _, data in arrivals] == [0, 1, 2]
    produced = [data["ms"] / 1000 for _, data in arrivals]
    assert produced[2] >= 2 * interval * 0.9  # the Worker really took ~0.6 s to make them
    first, last = arrivals[0][0], arrivals[2][0]
    # A buffering host delivers all three together, after the last one is made.
    assert last - first >= 2 * interval * 0.75, arrivals
    assert arrivals[1][0] - first >= interval * 0.5, arrivals


async def test_streamed_body_is_complete_and_ordered(client: httpx.AsyncClient) -> None:
    r = await client.get("/__stream?chunks=200&interval_ms=0&size=5000")
    assert r.status_code == 200
    lines = r.content.splitlines()
    assert [json.loads(line)["chunk"] for line in lines] == list(range(200))
    assert all(len(line) == 4999 for line in lines)  # padded to 5000 bytes with the newline


async def test_aborting_mid_stream_leaves_the_host_healthy(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        async with client.stream("GET", "/__stream?chunks=100&interval_ms=50") as response:
            async for line in response.aiter_lines():
                assert json.loads(line)["chunk"] == 0
                break  # leaving the block closes the connection mid-body
    r = await client.get("/__health")
    assert r.status_code == 200 and r.json()["ok"] is True


async def test_head_of_a_streamed_route_has_no_body(client: httpx.AsyncClient) -> None:
    r = await client.head("/__stream?chunks=3&interval_ms=1000")
    assert r.status_code == 200 and r.content == b""
    assert (await client.get("/__health")).status_code == 200


async def test_stream_parameters_are_validated(client: httpx.AsyncClient) -> None:
    for query in ("chunks=0", "chunks=1001", "interval_ms=-1", "size=x"):
        r = await client.get(f"/__stream?{query}")
        assert r.status_code == 400, (query, r.text)


@pytest.mark.host_only
async def test_fixed_bodies_keep_a_content_length(client: httpx.AsyncClient) -> None:
    """A body the Worker made in one piece goes out with Content-Length (as workerd sends it),
    a streamed one chunked."""
    r = await client.get("/__health")
    assert r.headers.get("content-length") == str(len(r.content))
    assert "transfer-encoding" not in r.headers
    r = await client.get("/__stream?chunks=2&interval_ms=50")
    assert r.headers.get("transfer-encoding") == "chunked"


async def test_large_request_body_reaches_the_worker_in_pieces(client: httpx.AsyncClient) -> None:
    size = 8 * 1024 * 1024

    async def body() -> AsyncIterator[bytes]:
        block = b"x" * 65536
        for _ in range(size // len(block)):
            yield block

    r = await client.post("/echo-stream", content=body())
    assert r.status_code == 200
    lines = [json.loads(line) for line in r.content.splitlines()]
    done = lines[-1]
    assert done["done"] is True and done["bytes"] == size
    assert done["chunks"] > 1, "the Worker got the body as one buffered piece"
    assert sum(line["bytes"] for line in lines[:-1]) == size


async def test_empty_request_body(client: httpx.AsyncClient) -> None:
    r = await client.post("/echo-stream")
    assert r.status_code == 200
    assert [json.loads(line) for line in r.content.splitlines()][-1]["bytes"] == 0


@pytest.mark.host_only
def test_request_body_streams_into_the_worker_while_it_answers(base_url: str) -> None:
    """Full duplex: the Worker's line for chunk 1 arrives before the client sends chunk 2.
    A host that buffers the request body never calls the Worker until the body ends."""
    with RawConnection(base_url, timeout=5) as conn:
        conn.send(
            build_request(
                "POST",
                "/echo-stream",
                headers=[("Transfer-Encoding", "chunked"), ("Content-Type", "application/octet-stream")],
                host=conn.host,
            )
        )
        conn.send(b"4\r\naaaa\r\n")
        status, _, headers = conn.read_head()
        assert status == 200
        lines = conn.chunks(headers)
        _, first = next(lines)
        assert json.loads(first) == {"chunk": 0, "bytes": 4, "total": 4, "ms": json.loads(first)["ms"]}
        conn.send(b"6\r\nbbbbbb\r\n")
        _, second = next(lines)
        assert json.loads(second)["total"] == 10
        conn.send(b"0\r\n\r\n")
        _, done = next(lines)
        assert json.loads(done)["done"] is True and json.loads(done)["bytes"] == 10
        assert list(lines) == []
