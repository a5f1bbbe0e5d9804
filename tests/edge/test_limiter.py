"""EdgeLimiter orchestration: lists, block cache, tiers across limits, fail-open/closed.

The backend here keeps the stored JSON in a dict and runs the same ``decide_stored``
step the Durable Object runs; the real objects are exercised through the host in
tests/http. Edge-safe: runs in Pyodide too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest

from edge_kv.core.decision import Decision
from edge_kv.edge.locks.client import EdgeLock
from edge_kv.edge.ratelimit.backends import KeyLocks
from edge_kv.edge.ratelimit.config import LimitSpec, parse_config
from edge_kv.edge.ratelimit.durable import ExplicitClockRefused, RateLimitObject
from edge_kv.edge.ratelimit.limiter import EdgeLimiter
from edge_kv.edge.ratelimit.state import Stored, decide_stored


class DictBackend:
    def __init__(self) -> None:
        self.data: dict[str, Stored] = {}
        self.calls = 0

    async def decide(
        self, spec: LimitSpec, key: str, cost: int, now_us: int | None
    ) -> tuple[Decision, Sequence[Decision], int]:
        self.calls += 1
        assert now_us is not None
        name = f"{spec.name}|{key}"
        out = decide_stored(spec.tiers, self.data.get(name), now_us, cost)
        if out.stored is not None:
            self.data[name] = out.stored
        return out.decision, out.decisions, now_us


class BrokenBackend:
    def __init__(self, hang: bool) -> None:
        self.hang = hang

    async def decide(
        self, spec: LimitSpec, key: str, cost: int, now_us: int | None
    ) -> tuple[Decision, Sequence[Decision], int]:
        if self.hang:
            await asyncio.sleep(10)
        raise RuntimeError("object exploded")


CFG = parse_config(
    {
        "limits": {
            "ip": {
                "key": "ip",
                "tiers": [{"name": "ip", "kind": "token_bucket", "capacity": 3, "refill_rate": 1}],
            },
            "user": {
                "key": "subject",
                "backend": "kv",
                "tiers": [{"name": "user", "kind": "fixed_window", "limit": 2, "window_s": 10}],
            },
            "flaky-open": {
                "key": "ip",
                "backend": "kv",
                "on_error": "open",
                "timeout_ms": 50,
                "tiers": [{"name": "fo", "kind": "fixed_window", "limit": 1, "window_s": 1}],
            },
            "flaky-closed": {
                "key": "ip",
                "backend": "kv",
                "on_error": "closed",
                "timeout_ms": 50,
                "tiers": [{"name": "fc", "kind": "fixed_window", "limit": 1, "window_s": 1}],
            },
        },
        "allow": ["10.0.0.0/8"],
        "deny": ["192.0.2.66", "subject:mallory"],
    }
)
T0 = 1_800_000_000_000_000


async def test_allows_then_refuses_with_headers_then_serves_from_block_cache() -> None:
    do = DictBackend()
    lim = EdgeLimiter(CFG, {"do": do})
    spec = [CFG.limit("ip")]
    for i in range(3):
        v = await lim.check(spec, ip="198.51.100.1", at_us=T0)
        assert v.allowed and v.source == "backend"
        headers = dict(v.headers)
        assert headers["RateLimit-Policy"] == '"ip";q=3;w=3'
        assert headers["RateLimit"] == f'"ip";r={2 - i};t={i + 1}'
        assert "Retry-After" not in headers
    v = await lim.check(spec, ip="198.51.100.1", at_us=T0 + 100_000)
    assert v.status == 429 and v.source == "backend"
    assert dict(v.headers)["Retry-After"] == "1"
    calls = do.calls
    v = await lim.check(spec, ip="198.51.100.1", at_us=T0 + 200_000)
    assert v.status == 429 and v.source == "block-cache" and do.calls == calls
    assert dict(v.headers)["RateLimit"] == '"ip";r=0;t=3'
    # Another key is unaffected; after Retry-After the backend is asked again and admits.
    assert (await lim.check(spec, ip="198.51.100.2", at_us=T0 + 200_000)).allowed
    v = await lim.check(spec, ip="198.51.100.1", at_us=T0 + 1_000_000)
    assert v.allowed and v.source == "backend"


async def test_lists_and_missing_key_parts() -> None:
    do = DictBackend()
    lim = EdgeLimiter(CFG, {"do": do, "kv": do})
    both = [CFG.limit("ip"), CFG.limit("user")]
    v = await lim.check(both, ip="192.0.2.66")
    assert v.status == 403 and v.source == "deny"
    v = await lim.check(both, ip="198.51.100.3", subject="mallory")
    assert v.status == 403
    v = await lim.check(both, ip="10.9.9.9", subject="alice")
    assert v.allowed and v.source == "allow" and v.headers == () and do.calls == 0
    # Anonymous: the subject-keyed limit does not apply, the IP one does.
    v = await lim.check([CFG.limit("user")], ip="198.51.100.3")
    assert v.allowed and v.source == "none" and do.calls == 0


async def test_tiers_across_limits_stop_at_first_refusal() -> None:
    do = DictBackend()
    lim = EdgeLimiter(CFG, {"do": do, "kv": do})
    both = [CFG.limit("user"), CFG.limit("ip")]
    for _ in range(2):
        v = await lim.check(both, ip="198.51.100.4", subject="bob", at_us=T0)
        assert v.allowed
        assert dict(v.headers)["RateLimit-Policy"] == '"user";q=2;w=10, "ip";q=3;w=3'
    v = await lim.check(both, ip="198.51.100.4", subject="bob", at_us=T0)
    assert v.status == 429 and v.limit == "user"
    # The IP limit was not charged for the refused request.
    assert do.data["ip|ip=198.51.100.4"]["ip"][1] == T0 + 2_000_000


async def test_bad_cost_is_rejected_before_any_call() -> None:
    do = DictBackend()
    lim = EdgeLimiter(CFG, {"do": do})
    for cost in (-1, 4, True, 1.0):
        with pytest.raises(ValueError):
            await lim.check([CFG.limit("ip")], ip="198.51.100.5", cost=cost)  # type: ignore[arg-type]
    assert do.calls == 0 and do.data == {}


@pytest.mark.parametrize("hang", [False, True])
async def test_fail_open_and_fail_closed(hang: bool) -> None:
    lim = EdgeLimiter(CFG, {"kv": BrokenBackend(hang)})
    v = await lim.check([CFG.limit("flaky-open")], ip="198.51.100.6")
    assert v.allowed and v.source == "fail-open" and len(v.failures) == 1
    assert ("timed out" in v.failures[0]) == hang
    v = await lim.check([CFG.limit("flaky-closed")], ip="198.51.100.6")
    assert v.status == 503 and v.source == "fail-closed" and dict(v.headers)["Retry-After"] == "1"


async def test_missing_backend_is_a_backend_error() -> None:
    lim = EdgeLimiter(CFG, {})
    v = await lim.check([CFG.limit("ip")], ip="198.51.100.7")
    assert v.status == 503 and "no backend" in v.failures[0]


async def test_verdict_carries_tier_decisions_and_backend_clock() -> None:
    lim = EdgeLimiter(CFG, {"do": DictBackend()})
    v = await lim.check([CFG.limit("ip")], ip="198.51.100.8", at_us=T0 + 5)
    assert v.at_us == T0 + 5 and len(v.decisions) == 1 and v.decisions[0].policy == "ip"


async def test_kv_key_locks_serialise_per_key_and_clean_up() -> None:
    locks = KeyLocks()
    inside: list[str] = []
    overlap = False

    async def section(key: str) -> None:
        nonlocal overlap

        async def body() -> None:
            nonlocal overlap
            if key in inside:
                overlap = True
            inside.append(key)
            await asyncio.sleep(0.001)
            inside.remove(key)

        await locks.run(key, body)

    await asyncio.gather(*(section(k) for k in ["a", "b"] * 10))
    assert not overlap and len(locks) == 0


async def test_durable_logic_refuses_explicit_clock_before_touching_storage() -> None:
    spec = json.dumps(CFG.limit("ip").to_json())
    obj = RateLimitObject(storage=None, test_clock=False)
    with pytest.raises(ExplicitClockRefused):
        await obj.decide(spec, "k", 1, now_us=T0)
    with pytest.raises(ValueError):
        await RateLimitObject(storage=None, test_clock=True).decide(spec, "k", 1, now_us=-1)
    with pytest.raises(ValueError):
        await obj.decide(spec, "k", 4)
    with pytest.raises(ValueError):
        await obj.decide(spec, "", 1)
    with pytest.raises(ValueError):
        await obj.decide('{"tiers": []}', "k", 1)


def test_edge_lock_client_checks_arguments() -> None:
    for kwargs in ({"ttl_ms": 0}, {"wait_ms": -1}, {"poll_ms": 0}, {"wait_ms": True}):
        with pytest.raises(ValueError):
            EdgeLock(None, "r", **kwargs)
    for resource in ("", "x" * 257):
        with pytest.raises(ValueError):
            EdgeLock(None, resource)
    lock = EdgeLock(None, "r")
    assert len(lock.owner) >= 20 and lock.owner != EdgeLock(None, "r").owner
