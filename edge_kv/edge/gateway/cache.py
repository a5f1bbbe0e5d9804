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

* **Two tiers** (:class:`TieredStore`): the Cache API first, KV (global) second for what the
  route's ``kv`` rule accepts; a KV hit is copied into the Cache API.
* **Purge** by URL, prefix or tag (``Cache-Tag`` from the origin) is recorded with its time
  (:class:`PurgeRecords`), so an entry stored before it is never served again from either
  tier or any isolate.

Not done here (documented in docs/gateway.md): herd protection across isolates (a miss is
coalesced only within one isolate; background revalidation is once per key per isolate).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import math
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge_kv.core import httpcache as hc
from edge_kv.edge.runtime import cache_delete, cache_get_bytes, cache_put_bytes, kv_delete, kv_get, kv_put

__all__ = [
    "CacheApiStore",
    "CacheEntry",
    "CacheRule",
    "CacheStore",
    "KvCacheStore",
    "KvTierRule",
    "MemoryCacheStore",
    "PurgeRecords",
    "ResponseCache",
    "TieredStore",
]

KEY_ORIGIN = "https://edge-kv-cache.internal/"
MAX_RETAIN_S = 365 * 86400


@dataclass(frozen=True)
class CacheRule:
    """A route's cache settings (``"cache"`` in the gateway document)."""

    key: hc.KeyRule = field(default_factory=hc.KeyRule)
    policy: hc.StorePolicy = field(default_factory=hc.StorePolicy)
    strict_s_maxage: bool = False
    kv: KvTierRule | None = None  # None: the Cache API tier only


@dataclass(frozen=True)
class CacheEntry:
    """One stored thing: a response (``stored`` + ``body``) or a Vary index (``vary``)."""

    stored: hc.StoredResponse | None = None
    body: bytes = b""
    vary: str | None = None
    origin: str = ""
    url: str = ""  # the normalised URL it answers (purge by URL or prefix)
    tags: tuple[str, ...] = ()  # the origin's Cache-Tag values (purge by tag)

    @property
    def stored_at(self) -> float:
        return self.stored.response_time if self.stored is not None else 0.0

    def encode(self) -> bytes:
        meta = {
            "stored": None if self.stored is None else self.stored.to_json(),
            "vary": self.vary,
            "origin": self.origin,
            "url": self.url,
            "tags": list(self.tags),
        }
        head = json.dumps(meta, separators=(",", ":")).encode()
        return struct.pack(">I", len(head)) + head + self.body

    @classmethod
    def decode(cls, data: bytes) -> CacheEntry | None:
        try:
            (size,) = struct.unpack(">I", data[:4])
            meta = json.loads(data[4 : 4 + size])
            stored = None if meta.get("stored") is None else hc.StoredResponse.from_json(meta["stored"])
            tags = tuple(str(t) for t in meta.get("tags") or ())
            return cls(
                stored,
                data[4 + size :],
                meta.get("vary"),
                str(meta.get("origin") or ""),
                str(meta.get("url") or ""),
                tags,
            )
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


@dataclass(frozen=True)
class KvTierRule:
    """What goes to the KV (second, global) tier: entries kept at least ``min_ttl_s``
    seconds (KV's own minimum is 60), bodies up to ``max_bytes`` (KV values may be 25 MiB),
    content types starting with one of ``content_types`` (empty: any)."""

    min_ttl_s: int = 60
    max_bytes: int = 1 << 20
    content_types: tuple[str, ...] = ()

    def accepts(self, entry: CacheEntry, retain_s: int) -> bool:
        if retain_s < max(60, self.min_ttl_s) or len(entry.body) > self.max_bytes:
            return False
        if not self.content_types or entry.stored is None:
            return True
        ctype = (hc.header_value(entry.stored.headers, "content-type") or "").lower()
        return any(ctype.startswith(t) for t in self.content_types)


class KvCacheStore:
    """Entries in Workers KV (text: base64 of the encoded entry), keyed by the key's hash."""

    def __init__(self, kv: Any) -> None:
        self.kv = kv

    @staticmethod
    def kv_key(key: str) -> str:
        return "edge_kv:cache:" + hashlib.sha256(key.encode()).hexdigest()

    async def get(self, key: str) -> CacheEntry | None:
        text = await kv_get(self.kv, self.kv_key(key))
        if not text:
            return None
        try:
            return CacheEntry.decode(base64.b64decode(text))
        except ValueError:
            return None

    async def put(self, key: str, entry: CacheEntry, retain_s: int) -> None:
        ttl = int(min(MAX_RETAIN_S, max(60, retain_s)))
        await kv_put(self.kv, self.kv_key(key), base64.b64encode(entry.encode()).decode(), ttl_s=ttl)

    async def delete(self, key: str) -> None:
        await kv_delete(self.kv, self.kv_key(key))


class TieredStore:
    """The Cache API first (per location, fast), KV second (global, eventually consistent):
    a KV hit is copied into the Cache API; writes go to both when the rule accepts them."""

    def __init__(self, first: CacheStore, second: CacheStore, rule: KvTierRule | None = None) -> None:
        self.first = first
        self.second = second
        self.rule = rule or KvTierRule()
        self.last_tier = ""

    async def get(self, key: str) -> CacheEntry | None:
        entry = await self.first.get(key)
        if entry is not None:
            self.last_tier = "cache"
            return entry
        entry = await self.second.get(key)
        if entry is not None:
            self.last_tier = "kv"
            if entry.stored is not None:
                retain = retain_seconds(entry.stored, entry.stored.response_time)
                await self.first.put(key, entry, retain)
        return entry

    async def put(self, key: str, entry: CacheEntry, retain_s: int) -> None:
        await self.first.put(key, entry, retain_s)
        if entry.stored is None or self.rule.accepts(entry, retain_s):
            await self.second.put(key, entry, retain_s)

    async def delete(self, key: str) -> None:
        await self.first.delete(key)
        await self.second.delete(key)


PURGES_KEY = "edge_kv:cache-purges"
MAX_PURGE_RECORDS = 2000


class PurgeRecords:
    """Purges by URL, prefix and tag, recorded with their time so that an entry stored
    before a purge is never served again — from either tier, in any isolate — even though
    the Cache API of other locations still holds it. Kept in one KV document (merged on
    write; the newest records win when it is full) and re-read by each isolate at most every
    ``refresh_s`` seconds in ``waitUntil``."""

    def __init__(self) -> None:
        self.urls: dict[str, float] = {}
        self.prefixes: dict[str, float] = {}
        self.tags: dict[str, float] = {}
        self.refreshed_at = -math.inf

    def purged(self, entry: CacheEntry) -> bool:
        at = entry.stored_at
        if self.urls.get(entry.url, -math.inf) >= at:
            return True
        if any(t >= at and entry.url.startswith(p) for p, t in self.prefixes.items()):
            return True
        return any(self.tags.get(tag, -math.inf) >= at for tag in entry.tags)

    def merge(self, doc: dict[str, Any]) -> None:
        for name in ("urls", "prefixes", "tags"):
            mine: dict[str, float] = getattr(self, name)
            for k, v in (doc.get(name) or {}).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    mine[str(k)] = max(mine.get(str(k), -math.inf), float(v))

    def to_json(self) -> dict[str, Any]:
        def newest(d: dict[str, float]) -> dict[str, float]:
            return dict(sorted(d.items(), key=lambda kv: kv[1])[-MAX_PURGE_RECORDS:])

        return {"urls": newest(self.urls), "prefixes": newest(self.prefixes), "tags": newest(self.tags)}

    async def refresh(self, kv: Any, now: float) -> None:
        self.refreshed_at = now
        text = await kv_get(kv, PURGES_KEY)
        if text:
            with contextlib.suppress(ValueError):  # unreadable: keep what this isolate knows
                self.merge(json.loads(text))

    async def record(
        self, kv: Any, now: float, *, urls: list[str], prefixes: list[str], tags: list[str]
    ) -> None:
        for url in urls:
            self.urls[url] = now
        for prefix in prefixes:
            self.prefixes[prefix] = now
        for tag in tags:
            self.tags[tag] = now
        if kv is None:
            return
        await self.refresh(kv, now)
        await kv_put(kv, PURGES_KEY, json.dumps(self.to_json(), separators=(",", ":")), ttl_s=MAX_RETAIN_S)


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
    store: Any = None  # where it was looked up (and where refreshes go)


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
        self.purges = PurgeRecords()
        self.revalidating: set[str] = set()
        self.revalidated_at: dict[str, float] = {}  # bounded: see forget_old
        self.filling: dict[str, asyncio.Future[Any]] = {}

    def key(
        self, rule: CacheRule, url: str, headers: list[tuple[str, str]], cf: Any, subject: str | None
    ) -> str:
        return hc.cache_key(rule.key, "GET", url, headers, cf or {}, subject or None)

    def store_for(self, rule: CacheRule, kv: Any) -> CacheStore:
        """The route's storage: the Cache API, plus KV when the rule has a ``kv`` tier."""
        if rule.kv is None or kv is None:
            return self.store
        return TieredStore(self.store, KvCacheStore(kv), rule.kv)

    async def lookup(
        self,
        rule: CacheRule,
        key: str,
        headers: list[tuple[str, str]],
        now: float,
        store: CacheStore | None = None,
    ) -> Lookup:
        store = store or self.store
        entry = await store.get(key)
        variant_key = key
        if entry is not None and entry.vary is not None:
            values = hc.vary_values(entry.vary, headers)
            if values is None:  # Vary: * never matches
                return Lookup(key, key, None, None, store)
            variant_key = key + "|v:" + json.dumps(values, separators=(",", ":"))
            entry = await store.get(variant_key)
        if entry is None or entry.stored is None or not hc.vary_matches(entry.stored, headers):
            return Lookup(key, variant_key, None, None, store)
        if self.purges.purged(entry):
            return Lookup(key, variant_key, None, None, store)
        freshness = hc.evaluate(entry.stored, headers, now, strict_s_maxage=rule.strict_s_maxage)
        return Lookup(key, variant_key, entry, freshness, store)

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
        url: str = "",
        store: CacheStore | None = None,
    ) -> hc.StoredResponse | None:
        """Store if RFC 9111 and the rule allow; the stored record, or ``None`` if not stored."""
        store = store or self.store
        ok, _reason = hc.storable(method, status, request_headers, response_headers, rule.policy)
        if not ok or method != "GET" or len(body) > rule.policy.max_body_bytes:
            return None
        stored = hc.StoredResponse.from_exchange(
            status, response_headers, request_headers, request_time, response_time
        )
        retain = retain_seconds(stored, response_time)
        vary = hc.header_value(stored.headers, "vary")
        tags = tuple(
            t.strip() for t in (hc.header_value(response_headers, "cache-tag") or "").split(",") if t.strip()
        )[:64]
        entry = CacheEntry(stored, body, None, origin, hc.normalize_url(url) if url else "", tags)
        if vary:
            values = hc.vary_values(vary, request_headers)
            if values is None:
                return None  # Vary: * is storable but can never be served: do not spend space
            await store.put(key, CacheEntry(None, b"", vary, origin), retain)
            await store.put(key + "|v:" + json.dumps(values, separators=(",", ":")), entry, retain)
        else:
            await store.put(key, entry, retain)
        return stored

    async def refresh(
        self, key: str, entry: CacheEntry, stored: hc.StoredResponse, now: float, store: Any = None
    ) -> None:
        """Keep a 304-refreshed copy (same body, new headers and times)."""
        refreshed = CacheEntry(stored, entry.body, None, entry.origin, entry.url, entry.tags)
        await (store or self.store).put(key, refreshed, retain_seconds(stored, now))

    def forget_old(self, now: float, horizon_s: float = 60.0) -> None:
        """Drop completion marks older than ``horizon_s`` (they only matter for a moment)."""
        if len(self.revalidated_at) > 1024:
            self.revalidated_at = {k: t for k, t in self.revalidated_at.items() if now - t < horizon_s}

    async def invalidate(self, keys: list[str], store: CacheStore | None = None) -> None:
        for key in keys:
            await (store or self.store).delete(key)

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
