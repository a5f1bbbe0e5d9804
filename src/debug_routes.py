"""Streaming routes of the reference Worker: bodies produced and consumed chunk by chunk.

Registered on the entry module's router by :func:`register`:

* ``GET /__stream?chunks=3&interval_ms=300&size=0`` — a ``ReadableStream``-backed body
  produced from Python: one NDJSON line per chunk (``{"chunk": i, "of": n, "ms": t}``, padded
  to ``size`` bytes when ``size`` is larger), the first at once, each next ``interval_ms``
  later. Proves a response reaches the client as it is produced (server-sent events, long
  polls, proxied bodies). ``chunks`` 1..1000, ``interval_ms`` 0..10000, ``size`` 0..1048576.
* ``POST /echo-stream`` — reads the request body as it arrives and answers, while still
  reading, one NDJSON line per chunk received (``{"chunk": i, "bytes": n, "total": t,
  "ms": t}``), then ``{"done": true, "chunks": n, "bytes": total, "ms": t}``. Nothing is
  buffered, so any body size works.

A consumer that goes away cancels the stream: the generator is closed and the Worker log
says ``stream cancelled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import parse_qs

from workers import Response

from edge_kv.edge.http import HttpError, RouteContext, Router

NDJSON = "application/x-ndjson"
MAX_CHUNKS = 1000
MAX_INTERVAL_MS = 10_000
MAX_CHUNK_BYTES = 1 << 20


def stream_response(
    chunks: AsyncIterator[bytes],
    *,
    name: str,
    status: int = 200,
    headers: Iterable[tuple[str, str]] = (),
) -> Response:
    """A ``Response`` whose body is pulled from ``chunks`` as the consumer reads it.

    The body is a JS ``ReadableStream`` with an async ``pull`` source: each pull awaits the
    next chunk, so nothing is produced ahead of the reader. ``cancel`` (the client went away)
    stops a pending pull and closes the generator; an exception in the generator errors the
    stream (the client sees a truncated body).
    """
    from js import ReadableStream
    from pyodide.ffi import create_proxy, to_js

    pending: list[asyncio.Task[Any]] = []
    sent = 0
    finished = False
    proxies: list[Any] = []

    def finish() -> None:
        nonlocal finished
        if not finished:
            finished = True
            for proxy in proxies:
                proxy.destroy()

    async def pull(controller: Any) -> None:
        nonlocal sent
        if finished:
            return
        task = asyncio.current_task()
        if task is not None:
            pending.append(task)
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            controller.close()
            finish()
            return
        except asyncio.CancelledError:
            return
        except Exception as exc:
            print(f"{name}: stream failed after {sent} chunk(s): {type(exc).__name__}: {exc}")
            controller.error(f"{type(exc).__name__}: {exc}")
            finish()
            return
        finally:
            if task is not None and task in pending:
                pending.remove(task)
        sent += 1
        controller.enqueue(to_js(chunk))

    async def cancel(reason: Any = None) -> None:
        if finished:
            return
        print(f"{name}: stream cancelled after {sent} chunk(s): {reason}")
        for task in list(pending):
            task.cancel()
        with contextlib.suppress(RuntimeError, AttributeError):  # still running: the cancelled task ends it
            await chunks.aclose()  # type: ignore[attr-defined]
        finish()

    proxies.extend([create_proxy(pull), create_proxy(cancel)])
    stream = ReadableStream.new(pull=proxies[0], cancel=proxies[1])
    return Response(stream, status=status, headers=list(headers))


def _int_param(query: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    raw = (query.get(name) or [str(default)])[0]
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, f"'{name}' must be an integer in [{low}, {high}], got {raw!r}") from None
    if not low <= value <= high:
        raise HttpError(400, f"'{name}' must be an integer in [{low}, {high}], got {value}")
    return value


def _line(data: dict[str, Any], size: int = 0) -> bytes:
    """One NDJSON line; with ``size`` larger than the line, a ``pad`` member fills it to ``size`` bytes."""
    line = json.dumps(data, separators=(",", ":"))
    if size > len(line) + 1:
        bare = len(json.dumps({**data, "pad": ""}, separators=(",", ":")))
        line = json.dumps({**data, "pad": "." * max(0, size - bare - 1)}, separators=(",", ":"))
    return (line + "\n").encode()


def register(router: Router) -> None:
    """Add the streaming routes to ``router``."""

    @router.route("GET", "/__stream")
    async def stream(rc: RouteContext) -> Any:
        query = parse_qs(rc.query)
        count = _int_param(query, "chunks", 3, 1, MAX_CHUNKS)
        interval = _int_param(query, "interval_ms", 300, 0, MAX_INTERVAL_MS)
        size = _int_param(query, "size", 0, 0, MAX_CHUNK_BYTES)

        async def chunks() -> AsyncIterator[bytes]:
            start = time.monotonic()
            for i in range(count):
                if i:
                    await asyncio.sleep(interval / 1000)
                ms = round((time.monotonic() - start) * 1000)
                yield _line({"chunk": i, "of": count, "ms": ms}, size)

        return stream_response(
            chunks(), name="/__stream", headers=[("content-type", NDJSON), ("cache-control", "no-store")]
        )

    @router.route("POST", "/echo-stream")
    async def echo_stream(rc: RouteContext) -> Any:
        body = rc.request.js_object.body
        get_reader = getattr(body, "getReader", None)  # None/jsnull without a body

        async def lines() -> AsyncIterator[bytes]:
            start = time.monotonic()
            count = total = 0
            if get_reader is not None:
                reader = get_reader()
                try:
                    while True:
                        result = await reader.read()
                        if result.done:
                            break
                        size = int(result.value.byteLength)
                        count, total = count + 1, total + size
                        ms = round((time.monotonic() - start) * 1000)
                        yield _line({"chunk": count - 1, "bytes": size, "total": total, "ms": ms})
                finally:
                    with contextlib.suppress(Exception):  # a read still pending after a cancel
                        reader.releaseLock()
            ms = round((time.monotonic() - start) * 1000)
            yield _line({"done": True, "chunks": count, "bytes": total, "ms": ms})

        return stream_response(lines(), name="/echo-stream", headers=[("content-type", NDJSON)])
