"""Plain ASGI middleware for Stripe-style ``Idempotency-Key`` (Starlette, FastAPI, any ASGI app).

For a request whose method is in ``methods`` and that carries the header:

* bad key (empty, too long, not visible ASCII, header repeated) -> 400 problem JSON;
* body larger than ``max_body_bytes`` -> 413 problem JSON;
* the app runs at most once per (principal, key); its response is buffered, stored
  (unless 5xx or an exception) and sent; later identical requests get the stored status,
  headers and body plus ``Idempotent-Replayed: true``;
* same key, different method/path/body -> 422; first still in flight -> 409 with
  ``Retry-After`` (or, with ``in_flight="wait"`` on the service, the stored response);
* store down -> 503 problem JSON (fail closed), or pass-through with ``fail_open=True``.

Requests without the header, other methods and non-HTTP scopes pass through untouched.
Streaming responses are buffered whole before they are sent (they must be stored).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable

from edge_kv.origin._asgi import (
    ASGIApp,
    BodyTooLarge,
    Disconnected,
    Message,
    Receive,
    Scope,
    Send,
    header,
    header_values,
    read_body,
    replay_body,
    send_problem,
)

from .fingerprint import fingerprint, scoped_key
from .model import FingerprintMismatch, InFlight, StoredResponse, StoreUnavailable
from .service import IdempotencyService

__all__ = ["REPLAYED_HEADER", "IdempotencyMiddleware", "Principal", "header_principal"]

log = logging.getLogger(__name__)

Principal = Callable[[Scope], str | Awaitable[str | None] | None]

REPLAYED_HEADER = "idempotent-replayed"


def header_principal(name: str) -> Principal:
    """Scope keys by a request header set by a trusted layer in front (e.g. the verified
    ``X-Edge-User`` the edge forwards). Requests without it share the anonymous scope."""
    wanted = name.lower().encode("latin-1")

    def principal(scope: Scope) -> str | None:
        return header(scope, wanted)

    return principal


class _Incomplete(RuntimeError):
    """The app returned without sending a complete response."""


class IdempotencyMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        service: IdempotencyService,
        *,
        header: str = "Idempotency-Key",
        methods: Iterable[str] = ("POST", "PUT", "PATCH", "DELETE"),
        principal: Principal | None = None,
        max_body_bytes: int = 1 << 20,
        fail_open: bool = False,
    ) -> None:
        if max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes must be > 0, got {max_body_bytes}")
        self.app = app
        self.service = service
        self.header = header.lower().encode("latin-1")
        self.methods = frozenset(m.upper() for m in methods)
        self.principal = principal
        self.max_body_bytes = max_body_bytes
        self.fail_open = fail_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("method", "").upper() not in self.methods:
            await self.app(scope, receive, send)
            return
        values = header_values(scope, self.header)
        if not values:
            await self.app(scope, receive, send)
            return
        if len(values) > 1:
            await send_problem(send, 400, "send exactly one Idempotency-Key header")
            return
        try:
            key = self.service.check_key(bytes(values[0]).decode("latin-1"))
        except ValueError as exc:
            await send_problem(send, 400, str(exc))
            return
        try:
            body = await read_body(receive, self.max_body_bytes)
        except Disconnected:
            return
        except BodyTooLarge:
            await send_problem(
                send,
                413,
                f"request bodies with an idempotency key are limited to {self.max_body_bytes} bytes",
            )
            return
        who = (await self._principal(scope)) or ""
        try:
            scoped_key(who, key)
        except ValueError as exc:
            await send_problem(send, 400, f"unusable principal: {exc}")
            return
        path = scope.get("raw_path") or scope.get("path", "").encode("utf-8")
        qs = scope.get("query_string") or b""
        target = bytes(path).decode("latin-1") + ("?" + bytes(qs).decode("latin-1") if qs else "")
        fp = fingerprint(scope["method"], target, body, header(scope, b"content-type"))

        captured = _Captured()

        async def handler() -> StoredResponse:
            return await _capture(self.app, scope, body, receive, captured)

        try:
            outcome = await self.service.execute(key, fp, handler, scope=who)
        except FingerprintMismatch as exc:
            await send_problem(send, 422, str(exc))
            return
        except InFlight as exc:
            await send_problem(send, 409, str(exc), [(b"retry-after", str(exc.retry_after_s).encode())])
            return
        except StoreUnavailable as exc:
            log.error("idempotency store unavailable: %s", exc)
            if self.fail_open:
                await self.app(scope, replay_body(body, receive), send)
                return
            await send_problem(
                send, 503, "the idempotency store is unavailable; retry later", [(b"retry-after", b"1")]
            )
            return
        except BaseException:
            # The app raised (nothing stored, mark released). Frameworks such as Starlette
            # send their 500 page *and* re-raise: forward that page, then let the server see
            # the exception as it would without this middleware.
            if captured.response is not None:
                await _send_stored(send, captured.response, [])
            raise
        extra = [(REPLAYED_HEADER, "true")] if outcome.replayed else []
        await _send_stored(send, outcome.response, extra)

    async def _principal(self, scope: Scope) -> str | None:
        if self.principal is None:
            return None
        who = self.principal(scope)
        if inspect.isawaitable(who):
            who = await who
        return who


class _Captured:
    """The complete response the app sent, if any (kept when the app raises afterwards)."""

    response: StoredResponse | None = None


async def _capture(
    app: ASGIApp, scope: Scope, body: bytes, receive: Receive, out: _Captured
) -> StoredResponse:
    status: int | None = None
    headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []
    complete = False

    async def capture(message: Message) -> None:
        nonlocal status, complete
        if message["type"] == "http.response.start":
            status = int(message["status"])
            headers.extend(
                (bytes(k).decode("latin-1"), bytes(v).decode("latin-1"))
                for k, v in message.get("headers", ())
            )
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False) and status is not None:
                complete = True
                out.response = StoredResponse(status=status, headers=tuple(headers), body=b"".join(chunks))

    await app(scope, replay_body(body, receive), capture)
    if not complete or out.response is None:
        raise _Incomplete("the application returned without sending a complete response")
    return out.response


async def _send_stored(send: Send, response: StoredResponse, extra: list[tuple[str, str]]) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (*response.headers, *extra)]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})
