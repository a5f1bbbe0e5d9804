"""Limiter backends over Workers bindings: exact (Durable Object) and approximate (KV).

:class:`DurableObjectBackend` sends each decision to the object named by
:func:`~edge_kv.edge.ratelimit.keys.object_name` (RPC ``decide``): exact and globally
consistent, one object round trip per request that the block cache does not answer.

:class:`KvBackend` reads the key's state from Workers KV, decides locally with the same
arithmetic and writes the new state back. It is **approximate**: the read and the write
are separate operations, so requests that read the same state concurrently are all
admitted (over-admission grows with the number of requests in flight for the key), and
KV is eventually consistent across locations (a write can take up to about 60 s to be
seen elsewhere, so each location may admit up to the full limit in that time). KV also
accepts about one write per second per key. Use it for cheap, non-critical limits
(abuse dampening, analytics quotas), never for billing or security limits.

Within one isolate the read-decide-write of a key is serialised by an in-memory lock,
so the race is only between isolates (and locations): on the offline host, which is one
isolate, it is exact; in production each isolate serving the key concurrently can
admit on a state that another isolate has already spent, up to the full limit per
isolate and per location within KV's propagation delay.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from edge_kv.core.decision import ceil_div
from edge_kv.core.errors import UpstreamFailed
from edge_kv.edge.ratelimit.config import LimitSpec
from edge_kv.edge.ratelimit.keys import object_name
from edge_kv.edge.ratelimit.limiter import BackendReply
from edge_kv.edge.ratelimit.limiter import now_us as real_now_us
from edge_kv.edge.ratelimit.state import decide_stored, decision_from_json, dumps, loads
from edge_kv.edge.runtime import call_rpc, kv_get, kv_put

KV_MIN_TTL_S = 60


def parse_reply(body: Any) -> BackendReply:
    """Decode what a ``RateLimiter.decide`` call returns."""
    if not isinstance(body, dict):
        raise UpstreamFailed(f"unexpected reply from the limiter object: {type(body).__name__}")
    decisions = [decision_from_json(d) for d in body["decisions"]]
    return decision_from_json(body["decision"]), decisions, int(body["now_us"])


class DurableObjectBackend:
    """Decisions by the ``RateLimiter`` Durable Object bound as ``namespace``."""

    def __init__(self, namespace: Any) -> None:
        self.namespace = namespace

    def stub(self, spec: LimitSpec, key: str) -> Any:
        return self.namespace.get(self.namespace.idFromName(object_name(spec, key)))

    async def decide(self, spec: LimitSpec, key: str, cost: int, now_us: int | None) -> BackendReply:
        spec_json = json.dumps(spec.to_json(), separators=(",", ":"))
        return parse_reply(await call_rpc(self.stub(spec, key), "decide", spec_json, key, cost, now_us))


class KeyLocks:
    """Per-isolate ``asyncio.Lock`` per KV key; entries are dropped when nobody holds them."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def run(self, key: str, fn: Any) -> Any:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                return await fn()
        finally:
            lock_now, n = self._locks[key]
            if n <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock_now, n - 1)

    def __len__(self) -> int:
        return len(self._locks)


ISOLATE_KEY_LOCKS = KeyLocks()


class KvBackend:
    """Approximate decisions with state in Workers KV (see the module docstring)."""

    def __init__(self, kv: Any, prefix: str = "rl:", locks: KeyLocks | None = None) -> None:
        self.kv = kv
        self.prefix = prefix
        self.locks = locks if locks is not None else ISOLATE_KEY_LOCKS

    def kv_key(self, spec: LimitSpec, key: str) -> str:
        return f"{self.prefix}{spec.name}:{key}"

    async def decide(self, spec: LimitSpec, key: str, cost: int, now_us: int | None) -> BackendReply:
        name = self.kv_key(spec, key)

        async def step() -> BackendReply:
            now = now_us if now_us is not None else real_now_us()
            raw = await kv_get(self.kv, name)
            outcome = decide_stored(spec.tiers, loads(raw if isinstance(raw, str) else None), now, cost)
            if outcome.stored is not None:
                ttl = max(KV_MIN_TTL_S, ceil_div(outcome.expires_us - now, 1_000_000))
                await kv_put(self.kv, name, dumps(outcome.stored), ttl_s=ttl)
            return outcome.decision, outcome.decisions, now

        reply: BackendReply = await self.locks.run(name, step)
        return reply
