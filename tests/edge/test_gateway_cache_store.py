"""The cache's storage tiers and purge records, over in-memory stores (CPython and Pyodide)."""

from __future__ import annotations

from edge_kv.core import httpcache as hc
from edge_kv.edge.gateway.cache import (
    CacheEntry,
    CacheRule,
    KvTierRule,
    MemoryCacheStore,
    PurgeRecords,
    ResponseCache,
    TieredStore,
)

NOW = 1_800_000_000.0


def entry(
    url: str, *, tags: tuple[str, ...] = (), body: bytes = b"x", ctype: str = "text/plain"
) -> CacheEntry:
    stored = hc.StoredResponse(200, (("cache-control", "max-age=600"), ("content-type", ctype)), NOW, NOW)
    return CacheEntry(stored, body, None, "o", hc.normalize_url(url), tags)


def test_entries_round_trip_and_garbage_is_a_miss() -> None:
    e = entry("https://a.example/x", tags=("t1",), body=b"\x00\xff body")
    assert CacheEntry.decode(e.encode()) == e
    assert CacheEntry.decode(b"garbage") is None and CacheEntry.decode(b"") is None


async def test_a_kv_hit_is_copied_into_the_first_tier() -> None:
    first, second = MemoryCacheStore(), MemoryCacheStore()
    store = TieredStore(first, second, KvTierRule())
    await second.put("k", entry("https://a.example/x"), 600)
    got = await store.get("k")
    assert got is not None and store.last_tier == "kv"
    assert "k" in first.entries
    assert await store.get("k") is not None and store.last_tier == "cache"


async def test_the_kv_rule_decides_what_goes_to_the_second_tier() -> None:
    first, second = MemoryCacheStore(), MemoryCacheStore()
    store = TieredStore(
        first, second, KvTierRule(min_ttl_s=120, max_bytes=4, content_types=("application/json",))
    )
    await store.put("short", entry("https://a.example/1", ctype="application/json"), 60)
    await store.put("big", entry("https://a.example/2", body=b"12345", ctype="application/json"), 600)
    await store.put("html", entry("https://a.example/3", ctype="text/html"), 600)
    await store.put("ok", entry("https://a.example/4", ctype="application/json; charset=utf-8"), 600)
    assert set(first.entries) == {"short", "big", "html", "ok"}
    assert set(second.entries) == {"ok"}
    await store.delete("ok")
    assert "ok" not in first.entries and "ok" not in second.entries


def test_purges_hide_entries_stored_before_them_only() -> None:
    purges = PurgeRecords()
    old = entry("https://a.example/p/1?x=1", tags=("blue",))
    assert not purges.purged(old)
    purges.merge({"tags": {"blue": NOW}})
    assert purges.purged(old)
    later = CacheEntry(hc.StoredResponse(200, (), NOW + 10, NOW + 10), b"", None, "o", old.url, ("blue",))
    assert not purges.purged(later)
    purges.merge({"prefixes": {"https://a.example/p/": NOW + 20}})
    assert purges.purged(later) and not purges.purged(entry("https://a.example/q/1"))
    purges.merge({"urls": {hc.normalize_url("https://a.example/q/1"): NOW}})
    assert purges.purged(entry("https://a.example/q/1"))
    assert PurgeRecords().to_json() == {"urls": {}, "prefixes": {}, "tags": {}}


async def test_a_purged_entry_in_the_second_tier_is_not_resurrected() -> None:
    first, second = MemoryCacheStore(), MemoryCacheStore()
    cache = ResponseCache(first)
    rule = CacheRule(kv=KvTierRule())
    store = cache.store_for(rule, kv=None)
    assert store is first  # no KV binding: one tier
    tiered = TieredStore(first, second, rule.kv)
    url = "https://a.example/item"
    key = cache.key(rule, url, [], {}, None)
    stored = await cache.store_response(
        rule,
        key,
        "GET",
        [],
        200,
        [("cache-control", "max-age=600"), ("cache-tag", "t")],
        b"v1",
        NOW,
        NOW,
        "o",
        url,
        tiered,
    )
    assert stored and key in second.entries
    first.entries.clear()  # another location: its Cache API never saw the entry
    await cache.purges.record(None, NOW + 1, urls=[], prefixes=[], tags=["t"])
    found = await cache.lookup(rule, key, [], NOW + 2, tiered)
    assert found.entry is None
