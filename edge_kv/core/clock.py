"""Time sources: a monotonic clock, the wall clock and a manual clock for tests.

Every component that measures time takes a :class:`Clock`, so tests can drive time
deterministically. :class:`FakeClock` never really sleeps: it moves its own time forward
by the amount asked and records each sleep, which lets a test assert exact backoff
schedules. ``monotonic`` measures durations and deadlines (breaker slow calls and open
periods, retry deadlines, budget floors); ``time`` is wall-clock epoch seconds, needed
only to read HTTP-date ``Retry-After`` values and to share state across hosts.

Stdlib only (``time``, ``asyncio``): runs on CPython and inside Pyodide.
"""

from __future__ import annotations

import asyncio
import time as _time
from typing import Protocol

from edge_kv.core.errors import InvalidInput

__all__ = ["SYSTEM_CLOCK", "Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    """What time-dependent components need from time."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the Unix epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the caller for ``seconds`` (or pretend to)."""
        ...


class SystemClock:
    """The real clocks and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        return _time.monotonic()

    def time(self) -> float:
        return _time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


SYSTEM_CLOCK = SystemClock()


class FakeClock:
    """A manual clock: it only moves when told to (:meth:`advance`) or when someone sleeps.

    ``sleep`` yields to the event loop once (so other tasks run) and then advances
    time by exactly the requested amount; ``sleeps`` lists every requested sleep.
    The wall clock moves with the monotonic one (``time() - monotonic()`` is constant).
    """

    def __init__(self, start: float = 1_000.0, wall_start: float = 1_700_000_000.0) -> None:
        self._mono = start
        self._wall_offset = wall_start - start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._mono

    def time(self) -> float:
        return self._mono + self._wall_offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise InvalidInput("a clock cannot go backwards")
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.sleeps.append(seconds)
        await asyncio.sleep(0)
        self._mono += seconds
