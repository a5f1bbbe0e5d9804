"""Origin health marks, shared across isolates without a storage call on the request path.

A request that sees an origin fail (connection error, timeout, 5xx) marks it unhealthy
until ``now + cooldown``: at once in this isolate, and in KV (one document,
``edge_kv:health``, merged by latest expiry) in ``ctx.waitUntil`` after the response.
Every isolate re-reads that document at most once per ``refresh_s``, also in
``waitUntil``, so a healthy request never waits for storage. Why KV and not a Durable
Object: marks are advisory (a stale one costs one failed attempt, which then fails over
within the same request), and KV reads are served from the location's cache, while one
Durable Object would put a global round trip on every refresh. The price: another
location sees a mark after KV propagation (up to ~60 s), and concurrent writers may drop
each other's marks (the next failure writes it again).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

from edge_kv.edge.runtime import kv_get, kv_put

__all__ = ["HEALTH_KEY", "HealthBoard"]

HEALTH_KEY = "edge_kv:health"


class HealthBoard:
    """Per-isolate view of the marks (keep one at module scope)."""

    def __init__(self, clock: Callable[[], float] = time.time, log: Callable[[str], None] = print) -> None:
        self.clock = clock
        self.log = log
        self.marks: dict[str, float] = {}
        self._refreshed_at = -math.inf
        self._refreshing = False

    def snapshot(self) -> dict[str, float]:
        """Live marks: origin id → wall time until which it is unhealthy."""
        now = self.clock()
        self.marks = {k: v for k, v in self.marks.items() if v > now}
        return dict(self.marks)

    def mark(self, origin_id: str, cooldown_s: float) -> float:
        until = self.clock() + cooldown_s
        self.marks[origin_id] = max(self.marks.get(origin_id, 0.0), until)
        return until

    def clear(self) -> None:
        self.marks.clear()
        self._refreshed_at = -math.inf

    async def publish(self, kv: Any, origin_id: str, until: float) -> None:
        """Merge one mark into the shared document (best effort)."""
        try:
            shared = _decode(await kv_get(kv, HEALTH_KEY))
            now = self.clock()
            shared = {k: v for k, v in shared.items() if v > now}
            shared[origin_id] = max(shared.get(origin_id, 0.0), until)
            ttl = max(60, math.ceil(max(shared.values()) - now) + 60)
            await kv_put(kv, HEALTH_KEY, json.dumps(shared, separators=(",", ":")), ttl_s=ttl)
        except Exception as exc:
            self.log(f"edge_kv: could not publish the health mark of {origin_id}: {exc}")

    def due(self, refresh_s: float) -> bool:
        return not self._refreshing and self.clock() - self._refreshed_at >= refresh_s

    async def refresh(self, kv: Any) -> None:
        """Merge the shared document into this isolate's marks (best effort)."""
        self._refreshing = True
        try:
            shared = _decode(await kv_get(kv, HEALTH_KEY))
            for k, v in shared.items():
                self.marks[k] = max(self.marks.get(k, 0.0), v)
        except Exception as exc:
            self.log(f"edge_kv: could not read the health marks: {exc}")
        finally:
            self._refreshed_at = self.clock()
            self._refreshing = False


def _decode(text: str | None) -> dict[str, float]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {
        str(k): float(v)
        for k, v in value.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }
