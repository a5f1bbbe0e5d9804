"""Bulkheads: cap how many calls run at once so one slow dependency cannot take every
worker, with a bounded FIFO queue, a queue timeout and typed rejections.

:class:`Bulkhead` is one compartment; :class:`TieredBulkhead` holds one compartment per
priority tier (``critical`` / ``standard`` / ``optional`` by default), so optional
traffic can be shed while critical calls keep their own reserved slots.

A freed slot is handed directly to the oldest waiter, so the limit holds exactly and
queued callers are served in order. Metrics are live counters (:class:`BulkheadMetrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import ParamSpec, TypeVar

from edge_kv.origin.resilience.errors import BulkheadFull, BulkheadTimeout

P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class BulkheadMetrics:
    """``in_use`` and ``queued`` are live; the rest count since creation."""

    in_use: int = 0
    queued: int = 0
    peak_in_use: int = 0
    accepted: int = 0
    rejected_full: int = 0
    rejected_timeout: int = 0
    completed: int = 0

    @property
    def rejected(self) -> int:
        return self.rejected_full + self.rejected_timeout


class Bulkhead:
    """At most ``max_concurrent`` holders; up to ``max_queue`` waiters, each for at most
    ``queue_timeout`` seconds (None = wait as long as it takes). ``max_queue=0``
    rejects at once when full."""

    def __init__(
        self, name: str, max_concurrent: int, *, max_queue: int = 0, queue_timeout: float | None = None
    ) -> None:
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int) or max_concurrent < 1:
            raise ValueError(f"max_concurrent must be an integer >= 1, got {max_concurrent!r}")
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 0:
            raise ValueError(f"max_queue must be an integer >= 0, got {max_queue!r}")
        if queue_timeout is not None and not queue_timeout > 0:
            raise ValueError(f"queue_timeout must be > 0 seconds or None, got {queue_timeout!r}")
        self.name = name
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.metrics = BulkheadMetrics()
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        """Take a slot (maybe after queueing) or raise BulkheadFull / BulkheadTimeout."""
        m = self.metrics
        if m.in_use < self.max_concurrent and not self._waiters:
            self._take()
            return
        if len(self._waiters) >= self.max_queue:
            m.rejected_full += 1
            raise BulkheadFull(self.name, self.max_concurrent, len(self._waiters))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        m.queued = len(self._waiters)
        try:
            async with asyncio.timeout(self.queue_timeout):
                await fut
        except BaseException as exc:
            if fut.done() and not fut.cancelled():
                # The slot was handed to us just as we timed out / were cancelled: give it back.
                self.release()
            else:
                fut.cancel()
                self._remove(fut)
            if isinstance(exc, TimeoutError):
                m.rejected_timeout += 1
                raise BulkheadTimeout(self.name, self.max_concurrent, len(self._waiters)) from None
            raise

    def _take(self) -> None:
        m = self.metrics
        m.in_use += 1
        m.accepted += 1
        if m.in_use > m.peak_in_use:
            m.peak_in_use = m.in_use

    def _remove(self, fut: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(fut)
        self.metrics.queued = len(self._waiters)

    def release(self) -> None:
        """Give the slot back; the oldest live waiter gets it directly."""
        m = self.metrics
        m.in_use -= 1
        m.completed += 1
        while self._waiters:
            fut = self._waiters.popleft()
            m.queued = len(self._waiters)
            if not fut.done():
                self._take()
                fut.set_result(None)
                return

    async def __aenter__(self) -> Bulkhead:
        await self.acquire()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        await self.acquire()
        try:
            return await fn(*args, **kwargs)
        finally:
            self.release()

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.call(fn, *args, **kwargs)

        return wrapper


@dataclass(frozen=True)
class TierLimits:
    max_concurrent: int
    max_queue: int = 0
    queue_timeout: float | None = None


DEFAULT_TIERS: Mapping[str, TierLimits] = {
    "critical": TierLimits(32, max_queue=64, queue_timeout=5.0),
    "standard": TierLimits(16, max_queue=32, queue_timeout=1.0),
    "optional": TierLimits(4, max_queue=0),
}


class TieredBulkhead:
    """One :class:`Bulkhead` per tier: ``async with tiers("optional"): ...``."""

    def __init__(
        self, name: str, tiers: Mapping[str, TierLimits] | None = None, *, default_tier: str = "standard"
    ):
        tiers = dict(DEFAULT_TIERS if tiers is None else tiers)
        if not tiers:
            raise ValueError("at least one tier is required")
        if default_tier not in tiers:
            raise ValueError(f"default_tier {default_tier!r} is not one of {sorted(tiers)}")
        self.name = name
        self.default_tier = default_tier
        self.tiers = {
            tier: Bulkhead(
                f"{name}:{tier}", t.max_concurrent, max_queue=t.max_queue, queue_timeout=t.queue_timeout
            )
            for tier, t in tiers.items()
        }

    def __call__(self, tier: str | None = None) -> Bulkhead:
        """The compartment of ``tier`` (the default tier when None); ValueError if unknown."""
        try:
            return self.tiers[tier or self.default_tier]
        except KeyError:
            raise ValueError(f"unknown bulkhead tier {tier!r}; known: {sorted(self.tiers)}") from None

    def metrics(self) -> dict[str, BulkheadMetrics]:
        return {tier: b.metrics for tier, b in self.tiers.items()}
