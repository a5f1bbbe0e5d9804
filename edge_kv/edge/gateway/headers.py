"""Header rules of the gateway: what never passes through, in either direction.

* Hop-by-hop fields (RFC 9110 §7.6.1): ``Connection`` and every field it names,
  ``Keep-Alive``, ``Proxy-Connection``, ``TE``, ``Trailer``, ``Transfer-Encoding``,
  ``Upgrade``, ``Proxy-Authorization``, ``Proxy-Authenticate``.
* On the way in, identity the client could forge: ``X-Edge-*`` (the gateway's own),
  ``Signature``/``Signature-Input`` (RFC 9421), ``Forwarded``, ``X-Forwarded-*``,
  ``X-Real-IP``, ``True-Client-IP``, ``X-Client-IP`` and every ``CF-*`` field; and the
  request-rewriting fields (``X-Original-URL``, ``X-Rewrite-URL``, ``X-HTTP-Method-Override``
  and kin, ``X-Host``) that would let a client poison a cached URL. What the origin needs of
  them is re-sent by the gateway from trusted sources and signed.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["HOP_BY_HOP", "forwardable_request_headers", "forwardable_response_headers", "is_client_identity"]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    }
)
_IDENTITY_EXACT = frozenset(
    {
        "signature",
        "signature-input",
        "forwarded",
        "x-real-ip",
        "true-client-ip",
        "x-client-ip",
        "content-digest",
        # Request-rewriting fields some frameworks honour: unkeyed by any cache, so a client
        # could use them to make the origin answer a different resource under this URL.
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-host",
        "x-forwarded-server",
    }
)
_IDENTITY_PREFIXES = ("x-edge-", "x-forwarded-", "cf-")
# Set by the runtime's fetch from the URL and body; never copied.
_RECOMPUTED = frozenset({"host", "content-length"})


def is_client_identity(name: str) -> bool:
    lower = name.lower()
    return lower in _IDENTITY_EXACT or lower.startswith(_IDENTITY_PREFIXES)


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def forwardable_request_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The client's header lines minus hop-by-hop, client-sent identity and recomputed ones."""
    lines = list(headers)
    drop = HOP_BY_HOP | _connection_tokens(lines) | _RECOMPUTED
    return [(n, v) for n, v in lines if n.lower() not in drop and not is_client_identity(n)]


def forwardable_response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The origin's header lines minus hop-by-hop ones (the runtime frames the body)."""
    lines = list(headers)
    drop = HOP_BY_HOP | _connection_tokens(lines) | {"content-length"}
    return [(n, v) for n, v in lines if n.lower() not in drop]
