"""The Redis Lua script reproduces the shared decision vectors (tests/vectors/ratelimit.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from edge_kv.core.ratelimit_spec import policy_from_spec
from edge_kv.origin.ratelimit import RateLimiter

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "ratelimit.json"
DATA: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))


def as_dict(d: Any) -> dict[str, Any]:
    return {
        "allowed": d.allowed,
        "limit": d.limit,
        "remaining": d.remaining,
        "retry_after_us": d.retry_after_us,
        "reset_after_us": d.reset_after_us,
        "policy": d.policy,
    }


@pytest.mark.parametrize("case", DATA["cases"], ids=[c["name"] for c in DATA["cases"]])
async def test_lua_reproduces_vectors(redis: aioredis.Redis, case: dict[str, Any]) -> None:
    limiter = RateLimiter(redis, [policy_from_spec(t) for t in case["tiers"]])
    for i, step in enumerate(case["steps"]):
        result = await limiter.hit("vector", step["cost"], now_us=step["now_us"])
        assert result.now_us == step["now_us"]
        assert [as_dict(d) for d in result.tiers] == step["tiers"], f"step {i}"
        assert as_dict(result.decision) == step["decision"], f"step {i}"
