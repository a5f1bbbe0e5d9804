"""Requests and subrequests through the runtime: header lists, bodies, ``fetch`` with a
deadline, and responses that stream what they are given.

Errors are typed so the gateway can answer correctly: :class:`OriginTimeout` (504) when the
origin did not answer within the deadline, :class:`OriginUnreachable` (502) when the
connection failed. Bodies of origin responses are passed through as the runtime's stream,
never read into Python.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edge_kv.core.errors import EdgeKvError, InvalidInput, UpstreamFailed
from edge_kv.edge.runtime._ffi import error_line


class OriginTimeout(EdgeKvError):
    """The origin did not send its response head within the route's timeout. 504."""

    status = 504
    code = "origin_timeout"


class OriginUnreachable(UpstreamFailed):
    """The connection to the origin failed (refused, reset, DNS, TLS). 502."""

    code = "origin_unreachable"


class BodyTooLarge(InvalidInput):
    """The request body exceeds what the route accepts. 413."""

    status = 413
    code = "body_too_large"


@dataclass
class OriginResponse:
    """An origin's answer: status, header lines (in order) and the body as the runtime's
    stream (``None`` when there is none)."""

    status: int
    headers: list[tuple[str, str]]
    body: Any = None
    raw: Any = None  # the runtime's Response, to read the body whole when it must be kept


async def read_body(response: OriginResponse) -> bytes:
    """The whole body of an origin response (for the cache); empty when there is none."""
    if response.body is None:
        return b""
    if isinstance(response.body, (bytes, bytearray)):
        return bytes(response.body)
    if isinstance(response.body, str):
        return response.body.encode()
    buffer = await response.raw.arrayBuffer()
    return bytes(buffer.to_py())


def request_headers(request: Any) -> list[tuple[str, str]]:
    """Every header line of an incoming request, names lower-cased, in order."""
    raw = getattr(request, "js_object", None)
    if raw is not None and hasattr(raw, "headers"):
        return [(str(k).lower(), str(v)) for k, v in (tuple(e) for e in raw.headers.entries())]
    items = getattr(getattr(request, "headers", None), "items", None)
    return [(str(k).lower(), str(v)) for k, v in items()] if items is not None else []


async def request_body(request: Any, *, max_bytes: int) -> bytes:
    """The request body as bytes (empty when none); :class:`BodyTooLarge` beyond ``max_bytes``.

    A declared ``Content-Length`` over the limit is refused before reading."""
    declared = getattr(getattr(request, "headers", None), "get", lambda _n: None)("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge(f"request body of {int(declared)} bytes exceeds {max_bytes}")
    raw = getattr(request, "js_object", None)
    if raw is not None and hasattr(raw, "arrayBuffer"):
        if raw.body is None:
            return b""
        buffer = await raw.arrayBuffer()
        data = bytes(buffer.to_py()) if hasattr(buffer, "to_py") else bytes(buffer)
    else:
        body = getattr(request, "body", b"")
        data = body.encode() if isinstance(body, str) else bytes(body or b"")
    if len(data) > max_bytes:
        raise BodyTooLarge(f"request body of {len(data)} bytes exceeds {max_bytes}")
    return data


def _js_headers(headers: Iterable[tuple[str, str]]) -> Any:
    from js import Headers

    out = Headers.new()
    for name, value in headers:
        out.append(name, value)
    return out


async def fetch_origin(
    url: str, method: str, headers: Iterable[tuple[str, str]], body: bytes | None, *, timeout_ms: int
) -> OriginResponse:
    """One subrequest with a deadline on the response head (redirects are passed back to the
    client, not followed)."""
    import asyncio

    from js import AbortController, Object, Uint8Array, fetch, setTimeout
    from pyodide.ffi import create_once_callable, to_js

    controller = AbortController.new()
    timed_out = False

    def abort() -> None:
        nonlocal timed_out
        timed_out = True
        controller.abort()

    timer = setTimeout(create_once_callable(abort), timeout_ms)
    init: dict[str, Any] = {
        "method": method,
        "headers": _js_headers(headers),
        "redirect": "manual",
        "signal": controller.signal,
    }
    if body:
        init["body"] = Uint8Array.new(to_js(body))
    try:
        response = await fetch(url, to_js(init, dict_converter=Object.fromEntries))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if timed_out:
            raise OriginTimeout(f"the origin did not answer within {timeout_ms} ms") from None
        raise OriginUnreachable(f"could not reach the origin: {error_line(exc)}") from None
    finally:
        from js import clearTimeout

        clearTimeout(timer)
    lines = [(str(k), str(v)) for k, v in (tuple(e) for e in response.headers.entries())]
    body = response.body
    if body is None or type(body).__name__ == "JsNull":  # no body (204, 304, HEAD): JS null
        body = None
    return OriginResponse(int(response.status), lines, body, response)


def streaming_response(status: int, headers: Iterable[tuple[str, str]], body: Any) -> Any:
    """A ``Response`` whose body is ``body`` as given (a runtime stream passes through
    chunk by chunk; ``None`` for no body)."""
    try:
        from workers import Response
    except ImportError:
        from edge_kv.edge.http import PlainResponse

        text = body if isinstance(body, str) else (bytes(body).decode("utf-8", "replace") if body else "")
        return PlainResponse(text, status=status, headers=list(headers))
    return Response(body, status=status, headers=list(headers))


CACHE_NAME = "edge-kv-gateway"


async def cache_get_bytes(url: str) -> bytes | None:
    """What the Cache API holds at ``url`` (the gateway's named cache), or ``None``."""
    from js import caches

    cache = await caches.open(CACHE_NAME)
    hit = await cache.match(url)
    if hit is None:
        return None
    buffer = await hit.arrayBuffer()
    return bytes(buffer.to_py())


async def cache_put_bytes(url: str, data: bytes, *, max_age_s: int) -> None:
    """Keep ``data`` at ``url`` for ``max_age_s`` seconds (the Cache API's own expiry)."""
    from js import Object, Response, Uint8Array, caches
    from pyodide.ffi import to_js

    cache = await caches.open(CACHE_NAME)
    headers = to_js(
        {
            "cache-control": f"public, max-age={max(1, int(max_age_s))}",
            "content-type": "application/octet-stream",
        },
        dict_converter=Object.fromEntries,
    )
    init = to_js({"status": 200, "headers": headers}, dict_converter=Object.fromEntries)
    await cache.put(url, Response.new(Uint8Array.new(to_js(data)), init))


async def cache_delete(url: str) -> None:
    from js import caches

    cache = await caches.open(CACHE_NAME)
    await cache.delete(url)
