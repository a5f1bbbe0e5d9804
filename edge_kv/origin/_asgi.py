"""ASGI plumbing shared by the origin middlewares (private): the ASGI callable types,
header lookup in a scope, reading a bounded request body and replaying it to the app,
and RFC 9457 problem responses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from edge_kv.core.problem import CONTENT_TYPE, problem_json

__all__ = [
    "ASGIApp",
    "BodyTooLarge",
    "Disconnected",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "encode_headers",
    "header",
    "header_values",
    "read_body",
    "replay_body",
    "send_problem",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HeaderPair = tuple[str | bytes, str | bytes]

_CONTENT_TYPE = CONTENT_TYPE.encode("latin-1")


def header_values(scope: Scope, name: bytes) -> list[bytes]:
    """Every value of the request header ``name`` (lower-case bytes), in order."""
    return [bytes(v) for k, v in scope.get("headers", ()) if bytes(k).lower() == name]


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of the request header ``name`` (lower-case bytes), latin-1
    decoded as on the wire; ``None`` when absent."""
    for k, v in scope.get("headers", ()):
        if bytes(k).lower() == name:
            return bytes(v).decode("latin-1")
    return None


def encode_headers(headers: Iterable[HeaderPair]) -> list[tuple[bytes, bytes]]:
    """Response headers for ASGI: ``str`` names are lower-cased and latin-1 encoded,
    ``bytes`` pass through unchanged."""
    out: list[tuple[bytes, bytes]] = []
    for k, v in headers:
        out.append(
            (
                k.lower().encode("latin-1") if isinstance(k, str) else k,
                v.encode("latin-1") if isinstance(v, str) else v,
            )
        )
    return out


class BodyTooLarge(Exception):
    """The request body is longer than the middleware accepts."""


class Disconnected(Exception):
    """The client went away before the whole body arrived: nothing to run."""


async def read_body(receive: Receive, max_bytes: int) -> bytes:
    """The whole request body; :class:`BodyTooLarge` once more than ``max_bytes`` have
    arrived, :class:`Disconnected` on ``http.disconnect``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """Give the app the already-read body once, then defer to the server (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def send_problem(
    send: Send,
    status: int,
    detail: str,
    headers: Iterable[HeaderPair] = (),
    *,
    instance: str | None = None,
    **extensions: Any,
) -> None:
    """Send a complete ``application/problem+json`` response (RFC 9457, built by
    :mod:`edge_kv.core.problem`, with any extension members) with ``headers`` after the
    content type and length."""
    body = problem_json(status, detail, instance=instance, **extensions).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", _CONTENT_TYPE),
                (b"content-length", str(len(body)).encode("latin-1")),
                *encode_headers(headers),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
