"""Property: the Redis Lua script and the Python core agree on every decision field.

Hypothesis draws policies (all four algorithms, alone and as tiers) and sequences of
(time step, cost) — including clock steps back and times above 1e14 us where Lua's
default number formatting would lose digits — and drives both with the same explicit
``now_us``. Examples: ``EDGE_KV_PROPERTY_EXAMPLES`` (default 150 per test).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_kv.core.ratelimit import (
    CounterState,
    FixedWindow,
    Policy,
    SlidingLog,
    SlidingWindowCounter,
    TokenBucket,
    WindowState,
    decide_tiers,
)
from edge_kv.origin.ratelimit import RateLimiter

EXAMPLES = int(os.environ.get("EDGE_KV_PROPERTY_EXAMPLES", "150"))
_keys = itertools.count()

rates = st.sampled_from([0.3, 1, 2, 3, 7, 10, 33.3, 100, 999, 1_000_000])
windows = st.sampled_from([0.001, 0.003, 0.1, 0.25, 1, 1.7, 10, 60, 3600, 86400])
limits = st.integers(1, 25)


def policy(kind: str, name: str) -> st.SearchStrategy[Policy]:
    if kind == "tb":
        return st.builds(TokenBucket, limits, rates, name=st.just(name))
    classes: dict[str, Callable[..., Policy]] = {
        "log": SlidingLog,
        "swc": SlidingWindowCounter,
        "fw": FixedWindow,
    }
    cls = classes[kind]
    return st.builds(cls, limits, windows, name=st.just(name))


@st.composite
def tiers(draw: st.DrawFn, kinds: tuple[str, ...]) -> list[Policy]:
    chosen = draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=3))
    return [draw(policy(k, f"t{i}")) for i, k in enumerate(chosen)]


@st.composite
def steps(draw: st.DrawFn, cap: int) -> list[tuple[int, int]]:
    start = draw(st.one_of(st.just(1_760_000_000_000_000), st.integers(0, 2**50)))
    scale = draw(st.sampled_from([1, 1_000, 100_000, 1_000_000, 60_000_000]))
    deltas = st.one_of(
        st.integers(0, scale),
        st.integers(0, 10 * scale),
        st.integers(-scale // 2, 0),  # clock steps back
    )
    out, now = [], start
    for delta, cost in draw(st.lists(st.tuples(deltas, st.integers(0, cap)), min_size=1, max_size=40)):
        now = max(0, now + delta)
        out.append((now, cost))
    return out


INITIAL: dict[type[Any], Any] = {
    TokenBucket: 0,
    SlidingLog: [],
    SlidingWindowCounter: CounterState(),
    FixedWindow: WindowState(),
}


async def check_agreement(redis: aioredis.Redis, policies: list[Policy], data: st.DataObject) -> None:
    cap = min(p.limit for p in policies)
    sequence = data.draw(steps(cap))
    limiter = RateLimiter(redis, policies)
    key = f"prop:{next(_keys)}"
    states = [INITIAL[type(p)] for p in policies]
    for now_us, cost in sequence:
        combined, expected, states = decide_tiers(list(zip(policies, states, strict=True)), now_us, cost)
        got = await limiter.hit(key, cost, now_us=now_us)
        assert list(got.tiers) == expected, (now_us, cost)
        assert got.decision == combined
        assert got.now_us == now_us


SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(policies=tiers(("tb",)), data=st.data())
async def test_token_bucket_agrees(
    redis: aioredis.Redis, policies: list[Policy], data: st.DataObject
) -> None:
    await check_agreement(redis, policies, data)


@SETTINGS
@given(policies=tiers(("log",)), data=st.data())
async def test_sliding_log_agrees(redis: aioredis.Redis, policies: list[Policy], data: st.DataObject) -> None:
    await check_agreement(redis, policies, data)


@SETTINGS
@given(policies=tiers(("swc",)), data=st.data())
async def test_sliding_window_counter_agrees(
    redis: aioredis.Redis, policies: list[Policy], data: st.DataObject
) -> None:
    await check_agreement(redis, policies, data)


@SETTINGS
@given(policies=tiers(("fw",)), data=st.data())
async def test_fixed_window_agrees(
    redis: aioredis.Redis, policies: list[Policy], data: st.DataObject
) -> None:
    await check_agreement(redis, policies, data)


@SETTINGS
@given(policies=tiers(("tb", "log", "swc", "fw")), data=st.data())
async def test_mixed_tiers_agree(redis: aioredis.Redis, policies: list[Policy], data: st.DataObject) -> None:
    await check_agreement(redis, policies, data)
