"""Limiter keys from trustworthy request attributes only.

* The client IP is ``CF-Connecting-IP``: Cloudflare's edge sets it on every request and
  overwrites any value the client sent. ``X-Forwarded-For``, ``X-Real-IP`` and friends
  are client-controlled at the edge and are never read. IPv6 addresses are keyed by
  their /64 network (``IPV6_PREFIX``) because one subscriber usually holds a whole /64.
* The subject is what the Worker authenticated (a verified JWT ``sub``, a hashed API
  key looked up in KV); it is passed in by the caller, never taken from a header here.
* The route is the matched route prefix from the configuration, not the raw path
  (a raw path would let a client mint unlimited keys with ``?x=1``-style variations).

A limit whose key needs a part the request lacks (``subject`` on an anonymous request)
does not apply to that request; pair it with an ``ip`` limit.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable

from edge_kv.core.validate import MAX_KEY_LENGTH
from edge_kv.edge.ratelimit.config import LimitSpec

IPV6_PREFIX = 64
CLIENT_IP_HEADER = "cf-connecting-ip"


def client_ip(get_header: Callable[[str], str | None]) -> str | None:
    """The client address from ``CF-Connecting-IP``, normalised; ``None`` if absent or invalid."""
    raw = get_header(CLIENT_IP_HEADER)
    if not raw:
        return None
    try:
        addr = ipaddress.ip_address(raw.strip())
    except ValueError:
        return None
    return str(addr)


def ip_key(ip: str) -> str:
    """Key part of an address: the address itself for IPv4, its /64 network for IPv6."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 6:
        return str(ipaddress.ip_network(f"{addr}/{IPV6_PREFIX}", strict=False))
    return str(addr)


def limit_key(spec: LimitSpec, *, ip: str | None, subject: str | None, route: str | None) -> str | None:
    """The key of ``spec`` for one request, or ``None`` when a needed part is missing."""
    parts: list[str] = []
    for part in spec.key:
        if part == "ip":
            if ip is None:
                return None
            parts.append("ip=" + ip_key(ip))
        elif part == "subject":
            if not subject:
                return None
            parts.append("sub=" + subject)
        elif part == "route":
            if route is None:
                return None
            parts.append("route=" + route)
        else:
            parts.append("global")
    key = "|".join(parts)
    if len(key.encode("utf-8")) > MAX_KEY_LENGTH // 2:
        key = "sha256=" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    return key


def object_name(spec: LimitSpec, key: str) -> str:
    """Durable Object name holding ``key``: one object per key, or per shard when configured."""
    if spec.shards:
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        return f"rl:{spec.name}:shard{int.from_bytes(digest[:8], 'big') % spec.shards}"
    return f"rl:{spec.name}:{key}"
