"""The offline host survives every client behaviour (raw sockets; host only).

Each test misbehaves as a client can — a body cut off half-way, a reset in the middle of a
response, headers or a body trickled in forever, a client that stops reading, ``CONNECT``,
pipelining, oversized or malformed requests — and then checks that the host still answers
``GET /__health`` and that its process is alive. The module's host runs with small timeouts
(the knobs of scripts/host/main.mjs) so the slow-client cases take seconds, not minutes.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from hostproc import HostProcess
from rawhttp import RawConnection, build_request

pytestmark = pytest.mark.host_only

HEADERS_TIMEOUT_S = 1.0
REQUEST_TIMEOUT_S = 2.5
WRITE_TIMEOUT_S = 1.5
KEEP_ALIVE_TIMEOUT_S = 1.0
MAX_HEADER_BYTES = 8192
KNOBS = (
    "--headers-timeout-ms",
    str(int(HEADERS_TIMEOUT_S * 1000)),
    "--request-timeout-ms",
    str(int(REQUEST_TIMEOUT_S * 1000)),
    "--write-timeout-ms",
    str(int(WRITE_TIMEOUT_S * 1000)),
    "--max-header-bytes",
    str(MAX_HEADER_BYTES),
    "--keep-alive-timeout-ms",
    str(int(KEEP_ALIVE_TIMEOUT_S * 1000)),
)
# Scheduling noise on the shared 2-core machine: how late a timeout may fire.
SLACK_S = 2.0


@pytest.fixture(scope="module")
def host(worker_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostProcess]:
    process = HostProcess(worker_config, tmp_path_factory.mktemp("faults-persist"), *KNOBS)
    process.start()
    try:
        yield process
    finally:
        process.close()


def assert_healthy(host: HostProcess) -> None:
    """The host process is alive and a fresh connection gets ``GET /__health`` -> 200."""
    assert host.proc is not None and host.proc.poll() is None, f"host exited:\n{host.output()[-3000:]}"
    response = httpx.get(f"{host.url}/__health", timeout=20)
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is True
    assert "triggerUncaughtException" not in host.output()


def wait_for_log(host: HostProcess, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = host.output()
        if text in output:
            return output
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the host log:\n{host.output()[-3000:]}")


def head_only(path: str, headers: list[tuple[str, str]], host: str) -> bytes:
    return build_request("POST", path, headers=headers, host=host)


# ---- aborted request bodies ----


@pytest.mark.parametrize("path", ["/echo", "/echo-stream", "/kv/abort", "/nowhere"])
@pytest.mark.parametrize("how", ["close", "reset"])
def test_request_body_cut_off(host: HostProcess, path: str, how: str) -> None:
    """Content-Length 100, 7 bytes sent, connection closed: the host used to exit here."""
    conn = RawConnection(host.url)
    headers = [("Content-Type", "application/json"), ("Content-Length", "100")]
    conn.send(
        build_request("PUT" if path.startswith("/kv") else "POST", path, headers=headers, host=conn.host)
    )
    conn.send(b'{"a": 1')
    time.sleep(0.2)
    conn.abort() if how == "reset" else conn.close()
    time.sleep(0.3)
    assert_healthy(host)


def test_chunked_body_cut_off(host: HostProcess) -> None:
    with RawConnection(host.url) as conn:
        headers = [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")]
        conn.send(head_only("/echo-stream", headers, conn.host) + b"5\r\nhello\r\n")
        first = conn.read_head()
        assert first[0] == 200  # the Worker answers while the body is still arriving
    time.sleep(0.3)
    assert_healthy(host)


def test_many_bodies_cut_off_at_once(host: HostProcess) -> None:
    conns = []
    for i in range(40):
        conn = RawConnection(host.url)
        path = "/echo" if i % 2 else "/echo-stream"
        headers = [("Content-Type", "application/json"), ("Content-Length", "100000")]
        conn.send(build_request("POST", path, headers=headers, host=conn.host) + b"x" * 1000)
        conns.append(conn)
    time.sleep(0.3)
    for i, conn in enumerate(conns):
        conn.abort() if i % 3 else conn.close()
    time.sleep(0.5)
    assert_healthy(host)


# ---- aborted responses ----


def test_client_leaves_before_the_response(host: HostProcess) -> None:
    for how in ("close", "reset"):
        conn = RawConnection(host.url)
        conn.request("GET", "/__stream?chunks=5&interval_ms=100")
        conn.abort() if how == "reset" else conn.close()
    time.sleep(0.8)
    assert_healthy(host)


def test_client_leaves_mid_stream_and_the_worker_stream_is_cancelled(host: HostProcess) -> None:
    marker = f"m{uuid.uuid4().hex[:8]}"
    conn = RawConnection(host.url)
    conn.request("GET", f"/__stream?chunks=50&interval_ms=100&{marker}=1")
    status, _, headers = conn.read_head()
    assert status == 200
    chunks = conn.chunks(headers)
    _, first = next(chunks)
    assert json.loads(first)["chunk"] == 0
    conn.abort()
    # The cancel reaches the Worker's stream (its generator is closed, no more chunks made).
    wait_for_log(host, "/__stream: stream cancelled after")
    assert_healthy(host)


def test_client_resets_while_a_large_body_is_written(host: HostProcess) -> None:
    conn = RawConnection(host.url)
    conn.request("GET", "/__stream?chunks=40&size=1048576&interval_ms=0")
    status, _, headers = conn.read_head()
    assert status == 200
    next(conn.chunks(headers))
    conn.abort()
    time.sleep(0.5)
    assert_healthy(host)


def test_client_that_stops_reading_is_disconnected_after_the_write_timeout(host: HostProcess) -> None:
    """Backpressure is honoured (the body is not buffered without bound) and a stalled
    reader is cut off after --write-timeout-ms, cancelling the Worker's stream."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    host_port = host.url.removeprefix("http://")
    address, port = host_port.split(":")
    sock.connect((address, int(port)))
    total = 64 * 1048576
    sock.sendall(build_request("GET", "/__stream?chunks=64&size=1048576&interval_ms=0", host=host_port))
    time.sleep(WRITE_TIMEOUT_S + SLACK_S + 1)
    received = b""
    sock.settimeout(10)
    while data := sock.recv(1 << 20):
        received += data
    sock.close()
    assert len(received) < total / 2, "the whole body was produced for a client that read nothing"
    assert not received.endswith(b"0\r\n\r\n"), "the response ended cleanly instead of being cut off"
    wait_for_log(host, "read nothing for")
    assert_healthy(host)


# ---- slow clients ----


def test_headers_trickled_in_forever_get_408(host: HostProcess) -> None:
    with RawConnection(host.url) as conn:
        start = time.monotonic()
        conn.send(b"GET /__health HTTP/1.1\r\nHost: x\r\n")
        closed = False
        for _ in range(int((HEADERS_TIMEOUT_S + SLACK_S) / 0.1)):
            try:
                conn.send(b"X")
            except OSError:
                closed = True
                break
            if conn.closed_within(0.1):
                closed = True
                break
        elapsed = time.monotonic() - start
        assert closed, f"still open after {elapsed:.1f} s"
        assert HEADERS_TIMEOUT_S * 0.8 <= elapsed <= HEADERS_TIMEOUT_S + SLACK_S, elapsed
        assert conn.buffer.startswith(b"HTTP/1.1 408 "), conn.buffer[:200]
    assert_healthy(host)


def test_connection_that_sends_nothing_gets_408(host: HostProcess) -> None:
    with RawConnection(host.url) as conn:
        start = time.monotonic()
        assert conn.closed_within(HEADERS_TIMEOUT_S + SLACK_S + 1)
        assert time.monotonic() - start >= HEADERS_TIMEOUT_S * 0.8
        assert conn.buffer.startswith(b"HTTP/1.1 408 "), conn.buffer[:200]
    assert_healthy(host)


def test_idle_keep_alive_connection_is_closed(host: HostProcess) -> None:
    with RawConnection(host.url) as conn:
        conn.request("GET", "/__health")
        assert conn.read_response().status == 200
        start = time.monotonic()
        assert conn.closed_within(KEEP_ALIVE_TIMEOUT_S + SLACK_S)
        assert time.monotonic() - start >= KEEP_ALIVE_TIMEOUT_S * 0.8
        assert conn.buffer == b""


def test_body_trickled_in_forever_is_cut_off(host: HostProcess) -> None:
    with RawConnection(host.url) as conn:
        start = time.monotonic()
        headers = [("Content-Type", "application/json"), ("Content-Length", "1000")]
        conn.send(build_request("POST", "/echo", headers=headers, host=conn.host))
        closed = False
        for _ in range(int((REQUEST_TIMEOUT_S + SLACK_S) / 0.2)):
            try:
                conn.send(b" ")
            except OSError:
                closed = True
                break
            if conn.closed_within(0.2):
                closed = True
                break
        elapsed = time.monotonic() - start
        assert closed, f"still open after {elapsed:.1f} s"
        assert REQUEST_TIMEOUT_S * 0.8 <= elapsed <= REQUEST_TIMEOUT_S + SLACK_S, elapsed
        assert conn.buffer.startswith(b"HTTP/1.1 408 "), conn.buffer[:200]
    assert_healthy(host)


def test_long_response_is_not_cut_by_the_request_timeout(host: HostProcess) -> None:
    """The request timeout bounds receiving the request, not a slow (streamed) response."""
    chunks = 8
    interval_ms = int(REQUEST_TIMEOUT_S * 1000 / 4)
    with RawConnection(host.url, timeout=30) as conn:
        conn.request("GET", f"/__stream?chunks={chunks}&interval_ms={interval_ms}")
        response = conn.read_response()
    assert response.status == 200
    assert len(response.body.splitlines()) == chunks
    assert_healthy(host)


# ---- odd requests ----


def test_connect_is_refused_with_501(host: HostProcess) -> None:
    with RawConnection(host.url) as conn:
        conn.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        response = conn.read_response()
        assert response.status == 501
        assert response.header("content-type") == "application/problem+json"
        assert json.loads(response.body)["status"] == 501
        assert conn.closed_within(5)
    assert_healthy(host)


def test_pipelined_requests_are_answered_in_order(host: HostProcess) -> None:
    key = uuid.uuid4().hex[:10]
    requests = [
        ("GET", "/__stream?chunks=3&interval_ms=150", None),  # slowest first
        ("GET", "/__health", None),
        ("PUT", f"/kv/{key}", json.dumps({"value": "pipelined"}).encode()),
        ("GET", f"/kv/{key}", None),
        ("POST", "/echo", b'{"n": 1}'),
        ("GET", f"/kv/{key}-missing", None),
    ]
    with RawConnection(host.url) as conn:
        payload = b"".join(
            build_request(
                method,
                path,
                headers=[("Content-Type", "application/json")] if body is not None else [],
                body=body,
                host=conn.host,
            )
            for method, path, body in requests
        )
        conn.send(payload)  # all six in one write
        responses = [conn.read_response(method) for method, _, _ in requests]
    assert [r.status for r in responses] == [200, 200, 200, 200, 200, 404]
    assert [json.loads(line)["chunk"] for line in responses[0].body.splitlines()] == [0, 1, 2]
    assert json.loads(responses[1].body)["ok"] is True
    assert json.loads(responses[3].body)["value"] == "pipelined"
    assert json.loads(responses[4].body) == {"json": {"n": 1}}
    assert_healthy(host)


@pytest.mark.parametrize("size", [MAX_HEADER_BYTES + 2048, 64 * 1024])
def test_oversized_headers_get_431(host: HostProcess, size: int) -> None:
    with RawConnection(host.url) as conn:
        conn.send(build_request("GET", "/__health", headers=[("X-Big", "a" * size)], host=conn.host))
        response = conn.read_response()
        assert response.status == 431
        assert conn.closed_within(5)
    assert_healthy(host)


def test_headers_under_the_limit_pass(host: HostProcess) -> None:
    with RawConnection(host.url) as conn:
        conn.request("GET", "/__health", headers=[("X-Big", "a" * (MAX_HEADER_BYTES - 1024))])
        assert conn.read_response().status == 200


@pytest.mark.parametrize(
    "raw",
    [
        b"NOT A REQUEST\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /__health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + os.urandom(64),  # a TLS ClientHello
        b"GET /__health HTTP/1.1\r\n\r\n",  # no Host
    ],
    ids=["garbage", "version", "header", "chunk-size", "two-lengths", "tls", "no-host"],
)
def test_malformed_requests_get_400(host: HostProcess, raw: bytes) -> None:
    with RawConnection(host.url) as conn:
        conn.send(raw)
        response = conn.read_response()
        assert response.status == 400, response
        assert conn.closed_within(5)
    assert_healthy(host)


def test_upgrade_request_without_websocket_support(host: HostProcess) -> None:
    with RawConnection(host.url) as conn:
        conn.request(
            "GET",
            "/__health",
            headers=[
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
        )
        response = conn.read_response()
        assert response.status == 200  # served as a plain request: the Worker did not accept a WebSocket
    assert_healthy(host)


def test_concurrent_mixed_faults(host: HostProcess) -> None:
    """Aborts, resets and normal requests at the same time; every normal request succeeds."""
    errors: list[BaseException] = []

    def normal() -> None:
        try:
            with httpx.Client(base_url=host.url, timeout=30) as client:
                for i in range(5):
                    r = client.post("/echo", json={"i": i})
                    assert r.status_code == 200 and r.json() == {"json": {"i": i}}
        except BaseException as exc:  # reported below
            errors.append(exc)

    def rude(i: int) -> None:
        try:
            conn = RawConnection(host.url)
            if i % 2:
                conn.request("GET", "/__stream?chunks=20&interval_ms=50")
                conn.read_head()
            else:
                conn.send(build_request("POST", "/echo", headers=[("Content-Length", "500")], host=conn.host))
                conn.send(b"{")
            conn.abort()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=normal) for _ in range(4)]
    threads += [threading.Thread(target=rude, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert_healthy(host)


# ---- process-level safety net ----

PRELOAD = """
import http from "node:http";
// Test-only: requests to /__host-test/* make the host process hit an unhandled rejection or
// an uncaught exception, outside any request handler, as a bug in a dependency would.
const emit = http.Server.prototype.emit;
http.Server.prototype.emit = function (event, req, ...rest) {
  if (event === "request" && req.url === "/__host-test/reject") {
    Promise.reject(new Error("test-only unhandled rejection"));
  }
  if (event === "request" && req.url === "/__host-test/throw") {
    setImmediate(() => { throw new Error("test-only uncaught exception"); });
  }
  return emit.call(this, event, req, ...rest);
};
"""


def test_unhandled_errors_are_logged_and_the_host_keeps_serving(
    start_host: Callable[..., HostProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    preload = tmp_path / "faults-preload.mjs"
    preload.write_text(PRELOAD)
    monkeypatch.setenv("NODE_OPTIONS", f"--import={preload.as_uri()}")
    host = start_host()
    host.start()
    monkeypatch.delenv("NODE_OPTIONS")
    for path, message in [
        ("/__host-test/reject", "test-only unhandled rejection"),
        ("/__host-test/throw", "test-only uncaught exception"),
    ]:
        assert httpx.get(f"{host.url}{path}", timeout=20).status_code == 404  # the Worker's answer
        output = wait_for_log(host, message)
        assert "keeps serving" in output
        assert_healthy(host)


# ---- a crashed Python runtime is replaced ----

CRASH_WORKER = """
import asyncio
import json

from workers import Response, WorkerEntrypoint

SERVED = 0  # a module global: starts again from 0 in a fresh runtime


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        global SERVED
        path = "/" + str(request.url).split("/", 3)[3]
        if path == "/crash":
            # Deep enough to overflow the wasm stack before Python's recursion check fires:
            # a fatal Pyodide error, after which every call into that runtime would hang.
            json.loads("[" * 200000 + "]" * 200000)
        if path == "/slow":
            await asyncio.sleep(4)
            return Response("slow done")
        if path == "/stream":
            return Response(await self.slow_stream())
        SERVED += 1
        return Response(str(SERVED))

    async def slow_stream(self):
        from js import ReadableStream
        from pyodide.ffi import create_proxy, to_js

        async def pull(controller):
            await asyncio.sleep(0.2)
            controller.enqueue(to_js(b"tick\\n"))

        return ReadableStream.new(pull=create_proxy(pull))
"""


def test_a_crashed_python_runtime_is_restarted(
    start_host: Callable[..., HostProcess], tmp_path: Path
) -> None:
    """A fatal Pyodide error (a wasm stack overflow) used to leave a host whose every request
    hung. Now the runtime is replaced: the crashing request and those in flight get a 500 or a
    closed stream, later requests are served by a fresh runtime (module globals reset)."""
    worker = tmp_path / "crash-worker"
    worker.mkdir()
    (worker / "entry.py").write_text(CRASH_WORKER)
    config = worker / "wrangler.toml"
    config.write_text(
        f'name = "crash"\nmain = "{worker / "entry.py"}"\n'
        'compatibility_date = "2025-11-01"\ncompatibility_flags = ["python_workers"]\n'
    )
    host = start_host(config=config)
    url = host.start()
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/count").text == "1"
        assert client.get("/count").text == "2"
        for round_ in range(2):
            in_flight: dict[str, object] = {}

            def slow(into: dict[str, object] = in_flight) -> None:
                with httpx.Client(base_url=url, timeout=30) as c:
                    into["slow"] = c.get("/slow").status_code

            thread = threading.Thread(target=slow)
            thread.start()
            stream_conn = RawConnection(url, timeout=30)
            stream_conn.request("GET", "/stream")
            status, _, headers = stream_conn.read_head()
            assert status == 200
            ticks = stream_conn.chunks(headers)
            next(ticks)
            time.sleep(0.3)
            crashed = client.get("/crash")
            assert crashed.status_code == 500, crashed.text
            assert "runtime crashed" in crashed.json()["detail"]
            thread.join(30)
            assert in_flight["slow"] == 500  # failed, not hung
            with pytest.raises(ConnectionError):  # the stream ends abruptly, it does not hang
                for _ in ticks:
                    pass
            stream_conn.close()
            assert client.get("/count").text == "1", "module globals survived: not a fresh runtime"
            output = wait_for_log(host, "Python runtime restarted")
            assert output.count("Python runtime restarted") == round_ + 1, output[-5000:]
    assert_healthy_at(host)


def assert_healthy_at(host: HostProcess) -> None:
    assert host.proc is not None and host.proc.poll() is None, host.output()[-3000:]
    assert httpx.get(f"{host.url}/count", timeout=20).status_code == 200
