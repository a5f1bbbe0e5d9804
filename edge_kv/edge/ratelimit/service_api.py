"""The rate-limit service API, for trusted callers (an origin without Redis).

* ``POST /ratelimit/{limit}`` — body ``{"key": str, "cost": int = 1}``; 200 with the
  decision and ``RateLimit`` headers, or the 429/503 problem. ``now_us`` is accepted only
  with ``EDGE_KV_TEST_CLOCK``.
* ``GET /ratelimit/{limit}/state?key=...`` — the stored state of a key.
* ``POST /ratelimit/{limit}/replay`` — test clock only (the route does not exist
  otherwise): ``{"key", "steps": [{"cost", "now_us"}, ...]}`` decided in order.

All need ``Authorization: Bearer <EDGE_KV_SERVICE_TOKEN>``
(:mod:`edge_kv.edge.auth.service_token`).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from edge_kv.core.validate import check_int_range, check_key
from edge_kv.edge.auth import require_service_token
from edge_kv.edge.env import env_binding, env_flag
from edge_kv.edge.http import HttpError, RouteContext, Router, json_response, read_json_object
from edge_kv.edge.ratelimit.backends import KvBackend
from edge_kv.edge.ratelimit.blockcache import BlockCache
from edge_kv.edge.ratelimit.config import LimitsConfig, LimitSpec
from edge_kv.edge.ratelimit.enforce import (
    build_limiter,
    limits_config,
    refusal,
    verdict_details,
    verdict_headers,
)
from edge_kv.edge.ratelimit.keys import object_name
from edge_kv.edge.runtime import call_rpc, kv_get

__all__ = ["MAX_REPLAY_STEPS", "TEST_CLOCK_VAR", "register", "test_clock_enabled"]

TEST_CLOCK_VAR = "EDGE_KV_TEST_CLOCK"
MAX_REPLAY_STEPS = 1000
MAX_NOW_US = 2**52 - 1


def test_clock_enabled(env: Any) -> bool:
    return env_flag(env, TEST_CLOCK_VAR)


test_clock_enabled.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def _body_int(body: dict[str, Any], name: str, default: int | None, lo: int, hi: int) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    return check_int_range(f"'{name}'", value, lo, hi)


async def _spec(rc: RouteContext) -> tuple[LimitsConfig, LimitSpec]:
    require_service_token(rc.env, rc.request.headers.get("authorization"))
    config = await limits_config(rc.env)
    name = rc.params["limit"]
    if name not in config.limits:
        raise HttpError(404, f"no rate limit named {name!r}")
    return config, config.limits[name]


def _key(value: object) -> str:
    try:
        return check_key(value)
    except ValueError as exc:
        raise HttpError(400, f"'key': {exc}") from None


def register(router: Router) -> None:
    """Add the service API routes (and the test-clock replay route) to ``router``."""

    @router.route("POST", "/ratelimit/{limit}")
    async def ratelimit_check(rc: RouteContext) -> Any:
        config, spec = await _spec(rc)
        body = await read_json_object(rc.request)
        unknown = sorted(set(body) - {"key", "cost", "now_us"})
        if unknown:
            hint = (
                " ('steps' go to POST /ratelimit/{limit}/replay, test clock only)" if "steps" in body else ""
            )
            raise HttpError(400, f"unknown field(s) {unknown}{hint}")
        key = _key(body.get("key"))
        cost = _body_int(body, "cost", 1, 0, 2**31)
        now_us = _body_int(body, "now_us", None, 0, MAX_NOW_US)
        if now_us is not None and not test_clock_enabled(rc.env):
            raise HttpError(400, "'now_us' is accepted only when EDGE_KV_TEST_CLOCK is enabled")
        assert cost is not None
        # Explicit test time: the isolate's block cache works on real time, keep it out.
        lim = build_limiter(rc.env, config, None if now_us is None else BlockCache())
        try:
            verdict = await lim.check_keys([(spec, key)], cost=cost, at_us=now_us)
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
        if not verdict.allowed:
            return refusal(verdict, **verdict_details(verdict))
        out: dict[str, Any] = {"allowed": True, "limit": spec.name, "source": verdict.source}
        return json_response({**out, **verdict_details(verdict)}, headers=verdict_headers(verdict))

    @router.route("POST", "/ratelimit/{limit}/replay", when=test_clock_enabled)
    async def ratelimit_replay(rc: RouteContext) -> Any:
        """Decide ``{"cost", "now_us"}`` steps in order, one object call each, in one HTTP
        request (conformance vectors without per-step HTTP)."""
        config, spec = await _spec(rc)
        body = await read_json_object(rc.request)
        unknown = sorted(set(body) - {"key", "steps"})
        if unknown:
            raise HttpError(400, f"unknown field(s) {unknown}")
        key = _key(body.get("key"))
        steps = body.get("steps")
        if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_REPLAY_STEPS:
            raise HttpError(400, f"'steps' must be a list of 1..{MAX_REPLAY_STEPS} objects")
        checked: list[tuple[int, int]] = []
        for i, step in enumerate(steps):
            if not isinstance(step, dict) or set(step) != {"cost", "now_us"}:
                raise HttpError(400, f"steps[{i}] must be an object with exactly 'cost' and 'now_us'")
            now_us = check_int_range(f"steps[{i}].now_us", step["now_us"], 0, MAX_NOW_US)
            cost = check_int_range(f"steps[{i}].cost", step["cost"], 0, min(t.limit for t in spec.tiers))
            checked.append((cost, now_us))
        lim = build_limiter(rc.env, config, BlockCache())
        results: list[dict[str, Any]] = []
        for cost, now_us in checked:
            lim.block_cache.clear()
            verdict = await lim.check_keys([(spec, key)], cost=cost, at_us=now_us)
            results.append(
                {"status": verdict.status or 200, "source": verdict.source, **verdict_details(verdict)}
            )
        return json_response({"limit": spec.name, "key": key, "results": results})

    @router.route("GET", "/ratelimit/{limit}/state")
    async def ratelimit_state(rc: RouteContext) -> Any:
        _, spec = await _spec(rc)
        key = _key((parse_qs(rc.query).get("key") or [""])[0])
        if spec.backend == "kv":
            backend = KvBackend(env_binding(rc.env, "EDGE_KV_LIMITS_KV", "KV"))
            raw = await kv_get(backend.kv, backend.kv_key(spec, key))
        else:
            ns = rc.env.RATE_LIMITER
            raw = await call_rpc(ns.get(ns.idFromName(object_name(spec, key))), "state", key)
        return json_response(
            {"limit": spec.name, "key": key, "state": None if raw is None else json.loads(raw)}
        )
