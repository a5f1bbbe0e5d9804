"""ASGI middleware: only requests the edge signed (RFC 9421) reach the app.

For every HTTP request (except those ``exempt`` says to let through, e.g. a health
check) it reads the whole body (at most ``max_body_bytes``, else 413), rebuilds the
target URI, and calls :func:`~edge_kv.origin.httpsig.verifier.verify_request`. Then

* **401** with an RFC 9457 problem body (``application/problem+json``, a ``reason``
  member such as ``replayed`` or ``bad_signature``), ``WWW-Authenticate: Signature ...``
  and the RFC 9421 §5.1 ``Accept-Signature`` field saying what a valid signature covers,
  for a missing, malformed, tampered, stale, future-dated, replayed signature, an
  unknown ``keyid`` or a body that does not match the signed ``Content-Digest``;
* **503** (problem body, ``Retry-After``) when the nonce store cannot answer: fail closed;
* otherwise the app runs with the body replayed to it and the verified
  :class:`~edge_kv.origin.httpsig.verifier.EdgeIdentity` in
  ``scope["state"]["edge_identity"]`` (Starlette/FastAPI: ``request.state.edge_identity``).

The ``Signature`` authentication scheme in ``WWW-Authenticate`` is a hint for humans and
tools; it is not an IANA-registered scheme.

Behind a proxy that terminates TLS, the scope's scheme and host are not what the edge
signed: pass ``target_uri=fixed_origin("https://api.example.com")``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from edge_kv.core.errors import InvalidInput
from edge_kv.core.httpsig import Keyring, SignatureRejected
from edge_kv.origin._asgi import (
    ASGIApp,
    BodyTooLarge,
    Disconnected,
    Receive,
    Scope,
    Send,
    header,
    read_body,
    replay_body,
    send_problem,
)
from edge_kv.origin.httpsig.nonces import NonceStore, NonceStoreUnavailable
from edge_kv.origin.httpsig.verifier import EdgeIdentity, SignaturePolicy, verify_request

__all__ = ["SignatureMiddleware", "edge_identity", "fixed_origin", "target_uri_from_scope"]

TargetUri = Callable[[Scope], str]

STATE_KEY = "edge_identity"


def _path_and_query(scope: Scope) -> str:
    raw = scope.get("raw_path")
    path = bytes(raw).decode("latin-1") if raw else quote(scope.get("path", "/"), safe="/:@!$&'()*+,;=-._~%")
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    return path + (f"?{query}" if query else "")


def target_uri_from_scope(scope: Scope) -> str:
    """``scheme://host/path?query`` as this server received it (``Host`` header, else
    the ASGI ``server``). A request sent with an empty query (``/a?``) cannot be told
    from one without (ASGI drops the ``?``)."""
    scheme = scope.get("scheme", "http")
    host = header(scope, b"host")
    if not host:
        server = scope.get("server")
        if not server:
            raise InvalidInput("cannot rebuild the target URI: no Host header and no ASGI server address")
        host_name, port = server[0], server[1]
        default = {"http": 80, "https": 443}.get(scheme)
        host = host_name if port in (None, default) else f"{host_name}:{port}"
    return f"{scheme}://{host}{_path_and_query(scope)}"


def fixed_origin(origin: str) -> TargetUri:
    """Rebuild target URIs on a fixed ``scheme://host[:port]`` (what the edge addressed),
    keeping the received path and query."""
    origin = origin.rstrip("/")
    if not origin.startswith(("http://", "https://")) or "/" in origin.split("://", 1)[1]:
        raise InvalidInput(f"origin must be scheme://host[:port] without a path, got {origin!r}")

    def target(scope: Scope) -> str:
        return origin + _path_and_query(scope)

    return target


def edge_identity(request_or_scope: Any) -> EdgeIdentity | None:
    """The verified identity of a Starlette/FastAPI ``Request`` (or an ASGI scope)."""
    scope = getattr(request_or_scope, "scope", request_or_scope)
    state = scope.get("state") or {}
    found = state.get(STATE_KEY)
    return found if isinstance(found, EdgeIdentity) else None


class SignatureMiddleware:
    """Wrap an ASGI app; see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keyring: Keyring,
        nonce_store: NonceStore,
        policy: SignaturePolicy | None = None,
        clock: Callable[[], float] = time.time,
        target_uri: TargetUri = target_uri_from_scope,
        max_body_bytes: int = 1 << 20,
        exempt: Callable[[Scope], bool] | None = None,
        realm: str = "edge-origin",
        unavailable_retry_after: int = 1,
    ) -> None:
        if not isinstance(keyring, Keyring):
            raise InvalidInput("keyring must be an edge_kv.core.httpsig.Keyring")
        if not callable(getattr(nonce_store, "claim", None)):
            raise InvalidInput("nonce_store must have an async claim(key, ttl_s) method")
        if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 0:
            raise InvalidInput("max_body_bytes must be a non-negative integer")
        if not realm.isprintable() or '"' in realm or "\\" in realm or not realm.isascii():
            raise InvalidInput("realm must be printable ASCII without quotes or backslashes")
        if (
            isinstance(unavailable_retry_after, bool)
            or not isinstance(unavailable_retry_after, int)
            or unavailable_retry_after < 0
        ):
            raise InvalidInput("unavailable_retry_after must be a non-negative integer")
        self.app = app
        self.keyring = keyring
        self.nonce_store = nonce_store
        self.policy = policy or SignaturePolicy()
        self.clock = clock
        self.target_uri = target_uri
        self.max_body_bytes = max_body_bytes
        self.exempt = exempt
        self.realm = realm
        self.unavailable_retry_after = unavailable_retry_after
        self._accept_signature = self.policy.accept_signature_header()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.exempt is not None and self.exempt(scope)):
            await self.app(scope, receive, send)
            return
        instance = scope.get("path")
        try:
            body = await self._read_body(scope, receive)
        except Disconnected:
            return
        except BodyTooLarge:
            await self._problem(
                send, 413, f"request body exceeds {self.max_body_bytes} bytes", instance, reason="too_large"
            )
            return
        headers = [
            (bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in scope.get("headers", ())
        ]
        try:
            url = self.target_uri(scope)
            identity = await verify_request(
                scope["method"],
                url,
                headers,
                body,
                keyring=self.keyring,
                nonce_store=self.nonce_store,
                policy=self.policy,
                now=int(self.clock()),
            )
        except SignatureRejected as exc:
            await self._problem(
                send,
                401,
                exc.detail,
                instance,
                reason=exc.reason,
                extra=[
                    ("WWW-Authenticate", f'Signature realm="{self.realm}", error="{exc.reason}"'),
                    ("Accept-Signature", self._accept_signature),
                ],
            )
            return
        except NonceStoreUnavailable:
            await self._problem(
                send,
                503,
                "the replay check is unavailable; try again shortly",
                instance,
                reason="nonce_store_unavailable",
                extra=[("Retry-After", str(self.unavailable_retry_after))],
            )
            return
        except InvalidInput as exc:  # the target URI could not be rebuilt
            await self._problem(send, 400, str(exc), instance, reason="bad_request")
            return
        scope.setdefault("state", {})[STATE_KEY] = identity
        await self.app(scope, replay_body(body, receive), send)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        declared = header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_body_bytes:
            raise BodyTooLarge
        return await read_body(receive, self.max_body_bytes)

    async def _problem(
        self,
        send: Send,
        status: int,
        detail: str,
        instance: str | None,
        *,
        reason: str,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        headers = [("cache-control", "no-store"), *(extra or ())]
        await send_problem(send, status, detail, headers, instance=instance, reason=reason)
