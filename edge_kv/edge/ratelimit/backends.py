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
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from edge_kv.core.decision import Decision, ceil_div
from edge_kv.edge.ratelimit.config import LimitSpec
from edge_kv.edge.ratelimit.keys import object_name
from edge_kv.edge.ratelimit.limiter import now_us as real_now_us
from edge_kv.edge.ratelimit.state import decide_stored, decision_from_json, dumps, loads

KV_MIN_TTL_S = 60


def parse_reply(raw: object) -> tuple[Decision, list[Decision]]:
    """Decode the JSON a ``RateLimiter.decide`` call returns."""
    if not isinstance(raw, str):
        raise ValueError(f"unexpected reply from the limiter object: {type(raw).__name__}")
    body = json.loads(raw)
    return decision_from_json(body["decision"]), [decision_from_json(d) for d in body["decisions"]]


class DurableObjectBackend:
    """Decisions by the ``RateLimiter`` Durable Object bound as ``namespace``."""

    def __init__(self, namespace: Any) -> None:
        self.namespace = namespace

    def stub(self, spec: LimitSpec, key: str) -> Any:
        return self.namespace.get(self.namespace.idFromName(object_name(spec, key)))

    async def decide(
        self, spec: LimitSpec, key: str, cost: int, now_us: int | None
    ) -> tuple[Decision, Sequence[Decision]]:
        spec_json = json.dumps(spec.to_json(), separators=(",", ":"))
        raw = await self.stub(spec, key).decide(spec_json, key, cost, now_us)
        return parse_reply(raw)


class KvBackend:
    """Approximate decisions with state in Workers KV (see the module docstring)."""

    def __init__(self, kv: Any, prefix: str = "rl:") -> None:
        self.kv = kv
        self.prefix = prefix

    def kv_key(self, spec: LimitSpec, key: str) -> str:
        return f"{self.prefix}{spec.name}:{key}"

    async def decide(
        self, spec: LimitSpec, key: str, cost: int, now_us: int | None
    ) -> tuple[Decision, Sequence[Decision]]:
        now = now_us if now_us is not None else real_now_us()
        name = self.kv_key(spec, key)
        raw = await self.kv.get(name)
        outcome = decide_stored(spec.tiers, loads(raw if isinstance(raw, str) else None), now, cost)
        if outcome.stored is not None:
            ttl = max(KV_MIN_TTL_S, ceil_div(outcome.expires_us - now, 1_000_000))
            await self.kv.put(name, dumps(outcome.stored), {"expirationTtl": ttl})
        return outcome.decision, outcome.decisions
