"""ASGI plumbing shared by the origin middlewares (private): the ASGI callable types,
header lookup in a scope and RFC 9457 problem responses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from edge_kv.core.problem import CONTENT_TYPE, problem_json

__all__ = [
    "ASGIApp",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "encode_headers",
    "header",
    "header_values",
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


async def send_problem(
    send: Send, status: int, detail: str, headers: Iterable[HeaderPair] = (), *, instance: str | None = None
) -> None:
    """Send a complete ``application/problem+json`` response (RFC 9457, built by
    :mod:`edge_kv.core.problem`) with ``headers`` after the content type and length."""
    body = problem_json(status, detail, instance=instance).encode("utf-8")
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
