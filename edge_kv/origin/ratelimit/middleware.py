"""ASGI rate-limit middleware: plain ASGI, so it works with Starlette, FastAPI or none.

For every HTTP request it derives a key (``key_func``), asks the :class:`RateLimiter`
(one Redis round trip, all tiers), and then

* refuses with **429** (RFC 6585) and an RFC 9457 problem body, ``Retry-After`` and the
  IETF ``RateLimit-Policy`` / ``RateLimit`` headers — the same headers the edge sends;
* or calls the app and adds ``RateLimit-Policy`` / ``RateLimit`` to its response.

A ``key_func`` returning ``None`` exempts the request. A key that is not acceptable
(empty, too long: it usually comes from the client) is a **400** problem. When Redis is
unreachable the limiter's ``fail_open`` decides: admit without headers, or answer
**503** with ``Retry-After`` (``unavailable_retry_after`` seconds) — the limiter could not
decide, which is not the client exceeding its quota. Either way the wait is bounded by
the limiter's ``timeout``.

Starlette / FastAPI::

    app.add_middleware(RateLimitMiddleware, limiter=limiter, key_func=header_key("x-api-key"))
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from edge_kv.origin._asgi import ASGIApp, Message, Receive, Scope, Send, encode_headers, header, send_problem
from edge_kv.origin.ratelimit.limiter import RateLimiter, RateLimiterUnavailable

__all__ = ["CostFunc", "KeyFunc", "RateLimitMiddleware", "client_ip", "header_key"]

KeyFunc = Callable[[Scope], str | Awaitable[str | None] | None]
CostFunc = Callable[[Scope], int]


def client_ip(scope: Scope) -> str | None:
    """Key by the peer address ASGI reports (behind a proxy, configure the server's
    forwarded-headers handling, e.g. uvicorn ``--proxy-headers``, so this is the client)."""
    client = scope.get("client")
    return f"ip:{client[0]}" if client else None


def header_key(name: str, *, fallback: KeyFunc | None = client_ip) -> KeyFunc:
    """Key by a request header (e.g. an API key or ``X-Edge-User``), else by ``fallback``."""
    wanted = name.lower().encode("latin-1")

    async def key(scope: Scope) -> str | None:
        value = header(scope, wanted)
        if value is not None:
            return f"{name.lower()}:{value}"
        if fallback is None:
            return None
        found = fallback(scope)
        return await found if inspect.isawaitable(found) else found

    return key


class RateLimitMiddleware:
    """Wrap an ASGI app with a :class:`RateLimiter` (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        *,
        key_func: KeyFunc = client_ip,
        cost_func: CostFunc | None = None,
        unavailable_retry_after: int = 1,
    ) -> None:
        if not isinstance(limiter, RateLimiter):
            raise ValueError("limiter must be an edge_kv RateLimiter")
        if (
            isinstance(unavailable_retry_after, bool)
            or not isinstance(unavailable_retry_after, int)
            or unavailable_retry_after < 0
        ):
            raise ValueError("unavailable_retry_after must be an integer number of seconds >= 0")
        self.app = app
        self.limiter = limiter
        self.key_func = key_func
        self.cost_func = cost_func
        self.unavailable_retry_after = unavailable_retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        instance = scope.get("path")
        found = self.key_func(scope)
        key = await found if inspect.isawaitable(found) else found
        if key is None:
            await self.app(scope, receive, send)
            return
        try:
            cost = self.cost_func(scope) if self.cost_func else 1
            result = await self.limiter.hit(key, cost)
        except ValueError as exc:
            await send_problem(send, 400, f"rate-limit key or cost rejected: {exc}", instance=instance)
            return
        except RateLimiterUnavailable:
            await send_problem(
                send,
                503,
                "the rate limiter is unavailable; try again shortly",
                [("Retry-After", str(self.unavailable_retry_after))],
                instance=instance,
            )
            return
        headers = result.headers()
        if not result.allowed:
            d = result.decision
            await send_problem(
                send,
                429,
                f"rate limit {d.policy!r} exceeded; retry in {d.retry_after_s} s",
                headers,
                instance=instance,
            )
            return
        if not headers:
            await self.app(scope, receive, send)
            return
        extra = encode_headers(headers)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
