"""In-isolate block cache: refuse a key already known to be blocked without a backend call.

When the limiter refuses ``cost`` units for a key with ``Retry-After`` T, no request of
that key costing ``cost`` or more can be admitted before T (no other request can give
tokens back), so later requests in the same isolate are refused from memory
(Upstash calls this the "ephemeral cache"). Cheaper requests (lower cost) still reach
the backend. The cache is bounded (LRU over live entries) so a flood of distinct keys
cannot grow isolate memory. It lives in module/global scope of the Worker, so its
hit rate depends on how many isolates serve the traffic; correctness does not.

The one case where it refuses something the backend would admit: the limit was raised
in the configuration while the key was blocked. The block then lasts at most until T.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace

from edge_kv.core.decision import Decision
from edge_kv.core.validate import check_positive_int

DEFAULT_MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class _Block:
    until_us: int
    cost: int
    decision: Decision


class BlockCache:
    """Bounded map ``key -> blocked until``; all times are integer microseconds."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = check_positive_int("max_entries", max_entries)
        self._entries: OrderedDict[str, _Block] = OrderedDict()
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def block(self, key: str, decision: Decision, now_us: int, cost: int) -> None:
        """Remember a refusal of ``cost`` units at ``now_us``; allowed decisions are ignored."""
        if decision.allowed or decision.retry_after_us <= 0 or cost <= 0:
            return
        old = self._entries.get(key)
        if old is not None and old.until_us > now_us and old.cost < cost:
            # The live block covers cheaper requests too; a costlier refusal adds nothing.
            return
        self._entries.pop(key, None)
        self._entries[key] = _Block(now_us + decision.retry_after_us, cost, decision)
        while len(self._entries) > self.max_entries:
            self._evict(now_us)

    def _evict(self, now_us: int) -> None:
        expired = [k for k, b in self._entries.items() if b.until_us <= now_us]
        for k in expired:
            del self._entries[k]
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def check(self, key: str, now_us: int, cost: int) -> Decision | None:
        """The refusal to serve from memory, or ``None`` to ask the backend.

        The returned decision's ``retry_after_us``/``reset_after_us`` are relative to
        ``now_us``.
        """
        block = self._entries.get(key)
        if block is None:
            return None
        if block.until_us <= now_us:
            del self._entries[key]
            return None
        if cost < block.cost:
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        elapsed = now_us - (block.until_us - block.decision.retry_after_us)
        return replace(
            block.decision,
            retry_after_us=block.until_us - now_us,
            reset_after_us=max(0, block.decision.reset_after_us - elapsed),
        )

    def clear(self) -> None:
        self._entries.clear()
