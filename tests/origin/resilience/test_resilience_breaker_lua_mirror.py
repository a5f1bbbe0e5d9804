"""breaker.lua must mirror edge_kv/core/breaker.py exactly: random operation sequences run
through both (same config, same clock) give the same verdicts and the same stored fields."""

from __future__ import annotations

import random
from collections.abc import Awaitable
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from edge_kv.core import breaker as policy
from edge_kv.core.breaker import BreakerConfig
from edge_kv.origin.resilience.breaker_redis import BREAKER_SCRIPT

CONFIGS = [
    BreakerConfig(
        window="count",
        window_size=5,
        minimum_calls=3,
        failure_rate_threshold=50,
        slow_call_duration=0.05,
        slow_call_rate_threshold=60,
        wait_in_open=0.2,
        half_open_probes=2,
    ),
    BreakerConfig(
        window="count",
        window_size=3,
        minimum_calls=10,
        failure_rate_threshold=33.4,
        wait_in_open=0.1,
        half_open_probes=1,
        half_open_timeout=0.3,
    ),
    BreakerConfig(
        window="time",
        window_size=3,
        minimum_calls=2,
        failure_rate_threshold=66.7,
        slow_call_duration=0.1,
        slow_call_rate_threshold=50,
        wait_in_open=1.5,
        half_open_probes=3,
    ),
]


def _norm(fields: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in fields.items() if v != 0}


@pytest.mark.parametrize("cfg_index", range(len(CONFIGS)))
async def test_lua_mirrors_python_on_random_sequences(redis: aioredis.Redis, cfg_index: int) -> None:
    cfg = CONFIGS[cfg_index]
    ttl = "60000"

    async def script(keys: list[str], args: list[str]) -> Any:
        return await BREAKER_SCRIPT.run(redis, keys, args)

    for seed in range(12):
        rng = random.Random(seed * 31 + cfg_index)
        key = f"mirror:{cfg_index}:{seed}"
        st: policy.State = {}
        now = 1_700_000_000_000 + rng.randrange(1000)
        gens: list[int] = [0]
        for step in range(150):
            now += rng.choice((0, 1, 7, 40, 120, 400, 1100, 2500))
            roll = rng.random()
            if roll < 0.4:
                expected = policy.acquire(cfg, st, now)
                raw = await script(keys=[key], args=["a", str(now), ttl, *cfg.lua_args()])
                if expected.allowed:
                    gens.append(expected.gen)
            elif roll < 0.97:
                gen = rng.choice(gens[-3:])
                kind = rng.choice((0, 0, 1, 1, 2))
                dur = rng.choice((0, 30, 50, 99, 100, 250))
                expected = policy.record(cfg, st, now, gen, kind, dur)
                raw = await script(
                    keys=[key], args=["r", str(now), ttl, *cfg.lua_args(), str(gen), str(kind), str(dur)]
                )
            else:
                new = rng.choice((policy.CLOSED, policy.OPEN))
                expected = policy.force(st, new, now)
                raw = await script(keys=[key], args=["f", str(now), ttl, *cfg.lua_args(), str(new)])
            got = (bool(raw[0]), int(raw[1]), int(raw[2]), int(raw[3]), int(raw[4]))
            assert got == tuple(expected)[:5], f"seed {seed} step {step}"
            # redis-py's asyncio client shares the sync client's signatures (`Awaitable[dict] | dict`).
            raw_hash = await cast(Awaitable[dict[bytes, bytes]], redis.hgetall(key))
            stored = {k.decode(): int(v) for k, v in raw_hash.items()}
            assert _norm(stored) == _norm(st), f"seed {seed} step {step}"


async def test_server_time_is_used_when_no_time_is_given(redis: aioredis.Redis) -> None:
    cfg = BreakerConfig(window_size=1, minimum_calls=1)
    await BREAKER_SCRIPT.run(redis, ["t"], ["f", "", "60000", *cfg.lua_args(), str(policy.OPEN)])
    since = int(await cast(Awaitable[bytes | None], redis.hget("t", "since")) or 0)
    server_s, _ = await redis.time()
    assert abs(since - server_s * 1000) < 5_000
    assert 0 < await redis.pttl("t") <= 60_000
