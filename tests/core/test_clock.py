"""Clocks: the system clock and the manual clock tests drive time with.

Stdlib + pytest only: runs on CPython and again inside Pyodide."""

from __future__ import annotations

import asyncio
import time

import pytest

from edge_kv.core.clock import SYSTEM_CLOCK, Clock, FakeClock, SystemClock
from edge_kv.core.errors import InvalidInput


async def test_fake_clock_moves_only_when_told_or_slept() -> None:
    clock = FakeClock(start=10.0, wall_start=1_000.0)
    assert (clock.monotonic(), clock.time()) == (10.0, 1_000.0)
    clock.advance(2.5)
    assert (clock.monotonic(), clock.time()) == (12.5, 1_002.5)
    await clock.sleep(3)
    await clock.sleep(-1)  # negative sleeps are no sleep
    assert clock.sleeps == [3.0, 0.0]
    assert clock.monotonic() == 15.5
    with pytest.raises(InvalidInput):
        clock.advance(-0.1)


async def test_fake_sleep_lets_other_tasks_run() -> None:
    clock = FakeClock()
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    task = asyncio.ensure_future(other())
    await clock.sleep(60)
    assert ran == ["other"]
    await task


async def test_system_clock() -> None:
    clock: Clock = SystemClock()
    assert isinstance(SYSTEM_CLOCK, SystemClock)
    before = clock.monotonic()
    await clock.sleep(0)
    await clock.sleep(-5)
    assert clock.monotonic() >= before
    assert abs(clock.time() - time.time()) < 5
