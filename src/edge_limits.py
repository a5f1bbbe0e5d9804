"""Rate limiting in the reference Worker: the ``RateLimiter`` Durable Object and its routes.

Routes (registered on the entry module's router by :func:`register`):

* ``GET /limited/{name}``, ``GET /limited-kv/{name}`` — demo resources behind the limits
  that the configuration's ``routes`` assign to their path (in ``wrangler.toml``: a
  Durable Object limit and a KV limit), keyed by ``CF-Connecting-IP``, the subject of an
  ``X-Api-Key`` verified against KV (stored hashed), and the matched route. 200 with
  ``RateLimit-Policy``/``RateLimit`` headers, or 429 + ``Retry-After`` (problem JSON),
  403 for the deny list, 503 when a fail-closed limit's backend is down.
* ``POST /ratelimit/{limit}`` — the service API for trusted callers (an origin without
  Redis): body ``{"key": str, "cost": int = 1}``; needs ``Authorization: Bearer
  <EDGE_KV_SERVICE_TOKEN>``. ``now_us`` is accepted only with ``EDGE_KV_TEST_CLOCK``.
* ``GET /ratelimit/{limit}/state?key=...`` — the stored state of a key (service API).

Use :func:`enforce` from any other route to put it behind the configured limits.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import parse_qs

from workers import DurableObject, Response

from edge_kv.core.validate import check_key
from edge_kv.edge.http import (
    HttpError,
    RouteContext,
    Router,
    json_response,
    problem_response,
    read_json_object,
)
from edge_kv.edge.ratelimit.backends import DurableObjectBackend, KvBackend
from edge_kv.edge.ratelimit.blockcache import BlockCache
from edge_kv.edge.ratelimit.config import ConfigError, LimitsConfig
from edge_kv.edge.ratelimit.durable import RateLimitObject
from edge_kv.edge.ratelimit.keys import client_ip, object_name
from edge_kv.edge.ratelimit.limiter import EdgeLimiter, Verdict
from edge_kv.edge.ratelimit.runtime import ConfigSource, env_flag, env_int, env_str, service_auth_error
from edge_kv.edge.ratelimit.state import decision_to_json

CONFIG = ConfigSource()
# Per-isolate, shared by every request this isolate serves (bounded LRU).
BLOCK_CACHE = BlockCache()


class RateLimiter(DurableObject):  # type: ignore[no-untyped-call]  # SDK __init_subclass__ is untyped
    """One object per limited key (or key shard): exact, globally consistent decisions."""

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.logic = RateLimitObject(ctx.storage, test_clock=env_flag(env, "EDGE_KV_TEST_CLOCK"))

    async def decide(self, spec_json: str, key: str, cost: int, now_us: int | None = None) -> str:
        return await self.logic.decide(spec_json, key, cost, now_us)

    async def state(self, key: str) -> str | None:
        return await self.logic.state(key)

    async def alarm(self, alarm_info: Any = None) -> None:
        await self.logic.alarm()


async def load_config(env: Any) -> LimitsConfig:
    try:
        return await CONFIG.get(env)
    except ConfigError as exc:
        print(f"edge_kv: invalid EDGE_KV_LIMITS: {exc}")
        raise HttpError(500, "the rate-limit configuration is invalid (see the Worker log)") from None


def limiter(env: Any, config: LimitsConfig) -> EdgeLimiter:
    size = env_int(env, "EDGE_KV_BLOCK_CACHE_SIZE", BLOCK_CACHE.max_entries, 1, 1_000_000)
    BLOCK_CACHE.max_entries = size
    backends: dict[str, Any] = {}
    if getattr(env, "RATE_LIMITER", None) is not None:
        backends["do"] = DurableObjectBackend(env.RATE_LIMITER)
    kv = getattr(env, env_str(env, "EDGE_KV_LIMITS_KV") or "KV", None)
    if kv is not None:
        backends["kv"] = KvBackend(kv)
    return EdgeLimiter(config, backends, BLOCK_CACHE)


def _details(verdict: Verdict) -> dict[str, Any]:
    """Decision details for service callers: combined and per-tier decisions, backend clock."""
    out: dict[str, Any] = {}
    if verdict.decision is not None:
        out["decision"] = decision_to_json(verdict.decision)
    if verdict.decisions:
        out["decisions"] = [decision_to_json(d) for d in verdict.decisions]
    if verdict.at_us is not None:
        out["at_us"] = verdict.at_us
    return out


def refusal(verdict: Verdict, **extra: Any) -> Response:
    """The response for a refused request: 429/403/503 problem JSON with the limit headers."""
    status = verdict.status or 500
    extensions: dict[str, Any] = dict(extra)
    if verdict.limit is not None:
        extensions["limit"] = verdict.limit
    if status == 429 and verdict.decision is not None:
        extensions["retry_after_ms"] = -(-verdict.decision.retry_after_us // 1000)
        detail = f"rate limit {verdict.limit!r} exceeded; retry after {verdict.decision.retry_after_s} s"
    else:
        detail = verdict.detail or "request refused"
    if verdict.failures:
        extensions["failures"] = list(verdict.failures)
    headers = [*verdict.headers, ("X-RateLimit-Source", verdict.source)]
    return problem_response(status, detail, headers=headers, **extensions)


async def enforce(rc: RouteContext, *, subject: str | None = None, cost: int = 1) -> Verdict:
    """Decide ``rc``'s request against the limits configured for its path.

    Keys come from ``CF-Connecting-IP``, the given authenticated ``subject`` and the
    matched route prefix, never from client-controlled headers.
    """
    config = await load_config(rc.env)
    rule = config.match_route(rc.path)
    specs = () if rule is None else tuple(config.limits[n] for n in rule.limits)
    ip = client_ip(rc.request.headers.get)
    return await limiter(rc.env, config).check(
        specs, ip=ip, subject=subject, route=None if rule is None else rule.prefix, cost=cost
    )


API_KEY_HEADER = "x-api-key"


async def api_key_subject(rc: RouteContext) -> str | None:
    """The subject of a presented API key, authenticated against KV.

    Keys are stored hashed: KV ``apikey:<sha256 hex of the key>`` holds the subject id.
    No header: anonymous (``None``); an unknown key: 401. The subject, not the raw
    header, is what per-API-key limits are keyed by.
    """
    presented = rc.request.headers.get(API_KEY_HEADER)
    if not presented:
        return None
    digest = hashlib.sha256(presented.encode("utf-8")).hexdigest()
    kv = getattr(rc.env, env_str(rc.env, "EDGE_KV_LIMITS_KV") or "KV")
    subject = await kv.get(f"apikey:{digest}")
    if not isinstance(subject, str) or not subject:
        raise HttpError(401, "unknown API key")
    return subject


def _body_int(body: dict[str, Any], name: str, default: int | None) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise HttpError(400, f"'{name}' must be an integer, got {value!r}")
    return value


def _service(rc: RouteContext) -> None:
    error = service_auth_error(rc.env, rc.request.headers.get("authorization"))
    if error is not None:
        raise HttpError(error[0], error[1])


async def _spec(rc: RouteContext) -> tuple[LimitsConfig, Any]:
    config = await load_config(rc.env)
    name = rc.params["limit"]
    if name not in config.limits:
        raise HttpError(404, f"no rate limit named {name!r}")
    return config, config.limits[name]


MAX_REPLAY_STEPS = 1000


async def _replay(rc: RouteContext, config: LimitsConfig, spec: Any, key: str, steps: Any) -> Response:
    """Test clock only: decide a sequence of ``{"cost", "now_us"}`` steps in order, one
    object call each, in one HTTP request (conformance vectors without per-step HTTP)."""
    if not env_flag(rc.env, "EDGE_KV_TEST_CLOCK"):
        raise HttpError(400, "'steps' is accepted only when EDGE_KV_TEST_CLOCK is enabled")
    if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_REPLAY_STEPS:
        raise HttpError(400, f"'steps' must be a list of 1..{MAX_REPLAY_STEPS} objects")
    checked: list[tuple[int, int]] = []
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or set(step) != {"cost", "now_us"}:
            raise HttpError(400, f"steps[{i}] must be an object with exactly 'cost' and 'now_us'")
        cost, now_us = _body_int(step, "cost", None), _body_int(step, "now_us", None)
        assert cost is not None and now_us is not None
        if not 0 <= now_us < 2**52:
            raise HttpError(400, f"steps[{i}].now_us must be in [0, 2**52)")
        for tier in spec.tiers:
            if not 0 <= cost <= tier.limit:
                raise HttpError(400, f"steps[{i}].cost {cost} is outside [0, {tier.limit}]")
        checked.append((cost, now_us))
    lim = limiter(rc.env, config)
    lim.block_cache = BlockCache()
    results: list[dict[str, Any]] = []
    for cost, now_us in checked:
        lim.block_cache.clear()
        verdict = await lim.check_keys([(spec, key)], cost=cost, at_us=now_us)
        results.append({"status": verdict.status or 200, "source": verdict.source, **_details(verdict)})
    return json_response({"limit": spec.name, "key": key, "results": results})


def register(router: Router) -> None:
    """Add the rate-limit routes to ``router``."""

    @router.route("GET", "/limited/{name}")
    @router.route("GET", "/limited-kv/{name}")
    async def limited_resource(rc: RouteContext) -> Any:
        verdict = await enforce(rc, subject=await api_key_subject(rc))
        if not verdict.allowed:
            return refusal(verdict)
        return json_response(
            {"ok": True, "resource": rc.params["name"], "limited_by": verdict.source},
            headers=[*verdict.headers, ("X-RateLimit-Source", verdict.source)],
        )

    @router.route("POST", "/ratelimit/{limit}")
    async def ratelimit_check(rc: RouteContext) -> Any:
        _service(rc)
        config, spec = await _spec(rc)
        body = await read_json_object(rc.request)
        unknown = sorted(set(body) - {"key", "cost", "now_us", "steps"})
        if unknown:
            raise HttpError(400, f"unknown field(s) {unknown}")
        try:
            key = check_key(body.get("key"))
        except ValueError as exc:
            raise HttpError(400, f"'key': {exc}") from None
        if "steps" in body:
            return await _replay(rc, config, spec, key, body["steps"])
        cost = _body_int(body, "cost", 1)
        now_us = _body_int(body, "now_us", None)
        if now_us is not None and not env_flag(rc.env, "EDGE_KV_TEST_CLOCK"):
            raise HttpError(400, "'now_us' is accepted only when EDGE_KV_TEST_CLOCK is enabled")
        if now_us is not None and not 0 <= now_us < 2**52:
            raise HttpError(400, f"'now_us' must be in [0, 2**52), got {now_us}")
        assert cost is not None
        lim = limiter(rc.env, config)
        if now_us is not None:
            # Explicit test time: the isolate's block cache works on real time, keep it out.
            lim.block_cache = BlockCache()
        try:
            verdict = await lim.check_keys([(spec, key)], cost=cost, at_us=now_us)
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
        if not verdict.allowed:
            return refusal(verdict, **_details(verdict))
        out: dict[str, Any] = {
            "allowed": True,
            "limit": spec.name,
            "source": verdict.source,
            **_details(verdict),
        }
        return json_response(out, headers=[*verdict.headers, ("X-RateLimit-Source", verdict.source)])

    @router.route("GET", "/ratelimit/{limit}/state")
    async def ratelimit_state(rc: RouteContext) -> Any:
        _service(rc)
        _, spec = await _spec(rc)
        key = (parse_qs(rc.query).get("key") or [""])[0]
        try:
            check_key(key)
        except ValueError as exc:
            raise HttpError(400, f"'key': {exc}") from None
        if spec.backend == "kv":
            raw = await KvBackend(getattr(rc.env, env_str(rc.env, "EDGE_KV_LIMITS_KV") or "KV")).kv.get(
                f"rl:{spec.name}:{key}"
            )
        else:
            ns = rc.env.RATE_LIMITER
            raw = await ns.get(ns.idFromName(object_name(spec, key))).state(key)
        return json_response(
            {"limit": spec.name, "key": key, "state": None if raw is None else json.loads(raw)}
        )
