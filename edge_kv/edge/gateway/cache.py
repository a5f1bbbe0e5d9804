"""The gateway's cache stage: a shared HTTP cache (RFC 9111) with RFC 5861's
``stale-while-revalidate`` and ``stale-if-error``, which Workers' Cache API does not honour.

The semantics are :mod:`edge_kv.core.httpcache`; this module decides where entries live and
when the origin is asked:

* **Storage**: the Cache API (per location), one entry per key, body and metadata together
  (:class:`CacheEntry`), kept for the freshness lifetime plus the longer of the two stale
  windows. A response with ``Vary`` gets an index entry at the key that names the varied
  fields, and one entry per variant, so variants are kept apart.
* **Hit** → served from the cache with ``Age``; a client's own ``If-None-Match`` /
  ``If-Modified-Since`` is answered 304 from the entry.
* **Stale within ``stale-while-revalidate``** → served at once; one background revalidation
  per key per isolate runs in ``ctx.waitUntil``.
* **Stale otherwise** → a conditional request to the origin; a 304 refreshes the stored
  headers and freshness without re-downloading; a full answer replaces the entry; a failed
  origin (connection, timeout, 5xx) within ``stale-if-error`` serves the stale copy.
* **Miss** → concurrent misses for one key in one isolate share one origin fetch.
* **Unsafe methods** that succeed invalidate their target URI (and same-origin
  ``Location``/``Content-Location``), RFC 9111 §4.4.

Every response says what happened: ``Cache-Status`` (RFC 9211) and ``X-Cache``
(``HIT|MISS|STALE|REVALIDATED|EXPIRED|BYPASS|ERROR-STALE``).

Not done here (documented in docs/gateway.md): the KV second tier, cross-isolate herd
protection, purge by prefix or tag.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge_kv.core import httpcache as hc
from edge_kv.edge.runtime import cache_delete, cache_get_bytes, cache_put_bytes

__all__ = ["CacheApiStore", "CacheEntry", "CacheRule", "CacheStore", "MemoryCacheStore", "ResponseCache"]

KEY_ORIGIN = "https://edge-kv-cache.internal/"
MAX_RETAIN_S = 365 * 86400


@dataclass(frozen=True)
class CacheRule:
    """A route's cache settings (``"cache"`` in the gateway document)."""

    key: hc.KeyRule = field(default_factory=hc.KeyRule)
    policy: hc.StorePolicy = field(default_factory=hc.StorePolicy)
    strict_s_maxage: bool = False


@dataclass(frozen=True)
class CacheEntry:
    """One stored thing: a response (``stored`` + ``body``) or a Vary index (``vary``)."""

    stored: hc.StoredResponse | None = None
    body: bytes = b""
    vary: str | None = None
    origin: str = ""

    def encode(self) -> bytes:
        meta = {
            "stored": None if self.stored is None else self.stored.to_json(),
            "vary": self.vary,
            "origin": self.origin,
        }
        head = json.dumps(meta, separators=(",", ":")).encode()
        return struct.pack(">I", len(head)) + head + self.body

    @classmethod
    def decode(cls, data: bytes) -> CacheEntry | None:
        try:
            (size,) = struct.unpack(">I", data[:4])
            meta = json.loads(data[4 : 4 + size])
            stored = None if meta.get("stored") is None else hc.StoredResponse.from_json(meta["stored"])
            return cls(stored, data[4 + size :], meta.get("vary"), str(meta.get("origin") or ""))
        except (ValueError, KeyError, TypeError, struct.error):
            return None  # unreadable: a miss, and the next store replaces it


class CacheStore(Protocol):
    async def get(self, key: str) -> CacheEntry | None: ...
    async def put(self, key: str, entry: CacheEntry, retain_s: int) -> None: ...
    async def delete(self, key: str) -> None: ...


def _url(key: str) -> str:
    return KEY_ORIGIN + hashlib.sha256(key.encode()).hexdigest()


class CacheApiStore:
    """Entries in the Workers Cache API (the gateway's named cache)."""

    async def get(self, key: str) -> CacheEntry | None:
        data = await cache_get_bytes(_url(key))
        return None if data is None else CacheEntry.decode(data)

    async def put(self, key: str, entry: CacheEntry, retain_s: int) -> None:
        await cache_put_bytes(_url(key), entry.encode(), max_age_s=retain_s)

    async def delete(self, key: str) -> None:
        await cache_delete(_url(key))


class MemoryCacheStore:
    """Entries in a dict (unit tests; expiry is not modelled)."""

    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}

    async def get(self, key: str) -> CacheEntry | None:
        data = self.entries.get(key)
        return None if data is None else CacheEntry.decode(data)

    async def put(self, key: str, entry: CacheEntry, retain_s: int) -> None:
        self.entries[key] = entry.encode()

    async def delete(self, key: str) -> None:
        self.entries.pop(key, None)


@dataclass
class Lookup:
    """What the cache holds for a request."""

    key: str
    variant_key: str
    entry: CacheEntry | None
    freshness: hc.Freshness | None


VALIDATION_KEEP_S = 86_400


def retain_seconds(stored: hc.StoredResponse, now: float) -> int:
    """How long the Cache API keeps an entry: its lifetime plus the longer stale window, or,
    when it has validators, a day more so a stale copy can still be revalidated with a 304."""
    cc = stored.cache_control
    lifetime = hc.freshness_lifetime(stored)
    keep = VALIDATION_KEEP_S if hc.conditional_headers(stored) else 0
    extra = max(cc.stale_while_revalidate or 0, cc.stale_if_error or 0, keep)
    remaining = lifetime + extra - hc.current_age(stored, now)
    return int(min(MAX_RETAIN_S, max(1, math.ceil(remaining) + 1)))


class ResponseCache:
    """The cache stage over a :class:`CacheStore` (keep one per isolate)."""

    def __init__(self, store: CacheStore | None = None) -> None:
        self.store: CacheStore = store if store is not None else CacheApiStore()
        self.revalidating: set[str] = set()
        self.revalidated_at: dict[str, float] = {}  # bounded: see forget_old
        self.filling: dict[str, asyncio.Future[Any]] = {}

    def key(
        self, rule: CacheRule, url: str, headers: list[tuple[str, str]], cf: Any, subject: str | None
    ) -> str:
        return hc.cache_key(rule.key, "GET", url, headers, cf or {}, subject or None)

    async def lookup(self, rule: CacheRule, key: str, headers: list[tuple[str, str]], now: float) -> Lookup:
        entry = await self.store.get(key)
        variant_key = key
        if entry is not None and entry.vary is not None:
            values = hc.vary_values(entry.vary, headers)
            if values is None:  # Vary: * never matches
                return Lookup(key, key, None, None)
            variant_key = key + "|v:" + json.dumps(values, separators=(",", ":"))
            entry = await self.store.get(variant_key)
        if entry is None or entry.stored is None or not hc.vary_matches(entry.stored, headers):
            return Lookup(key, variant_key, None, None)
        freshness = hc.evaluate(entry.stored, headers, now, strict_s_maxage=rule.strict_s_maxage)
        return Lookup(key, variant_key, entry, freshness)

    async def store_response(
        self,
        rule: CacheRule,
        key: str,
        method: str,
        request_headers: list[tuple[str, str]],
        status: int,
        response_headers: list[tuple[str, str]],
        body: bytes,
        request_time: float,
        response_time: float,
        origin: str,
    ) -> bool:
        """Store if RFC 9111 and the rule allow; whether it was stored."""
        ok, _reason = hc.storable(method, status, request_headers, response_headers, rule.policy)
        if not ok or method != "GET" or len(body) > rule.policy.max_body_bytes:
            return False
        stored = hc.StoredResponse.from_exchange(
            status, response_headers, request_headers, request_time, response_time
        )
        retain = retain_seconds(stored, response_time)
        vary = hc.header_value(stored.headers, "vary")
        entry = CacheEntry(stored, body, None, origin)
        if vary:
            values = hc.vary_values(vary, request_headers)
            if values is None:
                return False  # Vary: * is storable but can never be served: do not spend space
            await self.store.put(key, CacheEntry(None, b"", vary, origin), retain)
            await self.store.put(key + "|v:" + json.dumps(values, separators=(",", ":")), entry, retain)
        else:
            await self.store.put(key, entry, retain)
        return True

    async def refresh(self, key: str, entry: CacheEntry, stored: hc.StoredResponse, now: float) -> None:
        """Keep a 304-refreshed copy (same body, new headers and times)."""
        await self.store.put(
            key, CacheEntry(stored, entry.body, None, entry.origin), retain_seconds(stored, now)
        )

    def forget_old(self, now: float, horizon_s: float = 60.0) -> None:
        """Drop completion marks older than ``horizon_s`` (they only matter for a moment)."""
        if len(self.revalidated_at) > 1024:
            self.revalidated_at = {k: t for k, t in self.revalidated_at.items() if now - t < horizon_s}

    async def invalidate(self, keys: list[str]) -> None:
        for key in keys:
            await self.store.delete(key)

    async def coalesce(self, key: str, fill: Callable[[], Awaitable[Any]]) -> tuple[Any, bool]:
        """Run ``fill`` once per key among concurrent callers in this isolate; returns its
        result and whether this caller waited on another's fill."""
        pending = self.filling.get(key)
        if pending is not None:
            return await asyncio.shield(pending), True
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.filling[key] = future
        try:
            result = await fill()
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: followers re-raise it, nobody warns
            raise
        else:
            future.set_result(result)
            return result, False
        finally:
            self.filling.pop(key, None)
