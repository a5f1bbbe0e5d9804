"""Putting any route of a Worker behind the configured limits.

    from edge_kv.edge.ratelimit import enforce, refusal

    verdict = await enforce(rc, subject=user_id)
    if not verdict.allowed:
        return refusal(verdict)           # 429/403/503 problem JSON + RateLimit headers

The configuration (``EDGE_KV_LIMITS``, optional KV override; see
:mod:`edge_kv.edge.config_source`) is cached per isolate; so is the block cache, so a key
that is refused costs no Durable Object call until its retry time. Keys come from
``CF-Connecting-IP``, the authenticated ``subject`` the caller passes and the matched
route prefix, never from client-controlled headers.
"""

from __future__ import annotations

from typing import Any

from edge_kv.edge.config_source import ConfigSource, ConfigVars
from edge_kv.edge.env import env_binding, env_int
from edge_kv.edge.http import HttpError, RouteContext, problem_response
from edge_kv.edge.ratelimit.backends import DurableObjectBackend, KvBackend
from edge_kv.edge.ratelimit.blockcache import BlockCache
from edge_kv.edge.ratelimit.config import ConfigError, LimitsConfig, load_config
from edge_kv.edge.ratelimit.keys import client_ip
from edge_kv.edge.ratelimit.limiter import EdgeLimiter, LimitVerdict
from edge_kv.edge.ratelimit.state import decision_to_json

__all__ = [
    "BLOCK_CACHE",
    "LIMITS_CONFIG",
    "LIMITS_VARS",
    "build_limiter",
    "enforce",
    "limits_config",
    "refusal",
    "verdict_details",
    "verdict_headers",
]

LIMITS_VARS = ConfigVars(
    document="EDGE_KV_LIMITS",
    kv_key="EDGE_KV_LIMITS_KV_KEY",
    kv_binding="EDGE_KV_LIMITS_KV",
    cache_s="EDGE_KV_LIMITS_CACHE_S",
)
# Per isolate, shared by every request the isolate serves.
LIMITS_CONFIG: ConfigSource[LimitsConfig] = ConfigSource(load_config, LIMITS_VARS)
BLOCK_CACHE = BlockCache()


async def limits_config(env: Any) -> LimitsConfig:
    """The limits in force; a broken ``EDGE_KV_LIMITS`` var is logged and answered 500."""
    try:
        return await LIMITS_CONFIG.get(env)
    except ConfigError as exc:
        print(f"edge_kv: invalid EDGE_KV_LIMITS: {exc}")
        raise HttpError(500, "the rate-limit configuration is invalid (see the Worker log)") from None


def build_limiter(env: Any, config: LimitsConfig, block_cache: BlockCache | None = None) -> EdgeLimiter:
    """A limiter over the bindings present: ``RATE_LIMITER`` (Durable Object backend ``do``)
    and the KV namespace named by ``EDGE_KV_LIMITS_KV`` (default ``KV``; backend ``kv``)."""
    cache = BLOCK_CACHE if block_cache is None else block_cache
    cache.max_entries = env_int(env, "EDGE_KV_BLOCK_CACHE_SIZE", cache.max_entries, 1, 1_000_000)
    backends: dict[str, Any] = {}
    if getattr(env, "RATE_LIMITER", None) is not None:
        backends["do"] = DurableObjectBackend(env.RATE_LIMITER)
    kv = env_binding(env, "EDGE_KV_LIMITS_KV", "KV")
    if kv is not None:
        backends["kv"] = KvBackend(kv)
    return EdgeLimiter(config, backends, cache)


async def enforce(rc: RouteContext, *, subject: str | None = None, cost: int = 1) -> LimitVerdict:
    """Decide ``rc``'s request against the limits configured for its path."""
    config = await limits_config(rc.env)
    rule = config.match_route(rc.path)
    specs = () if rule is None else tuple(config.limits[n] for n in rule.limits)
    ip = client_ip(rc.request.headers.get)
    return await build_limiter(rc.env, config).check(
        specs, ip=ip, subject=subject, route=None if rule is None else rule.prefix, cost=cost
    )


def verdict_details(verdict: LimitVerdict) -> dict[str, Any]:
    """Decision details for service callers: combined and per-tier decisions, backend clock."""
    out: dict[str, Any] = {}
    if verdict.decision is not None:
        out["decision"] = decision_to_json(verdict.decision)
    if verdict.decisions:
        out["decisions"] = [decision_to_json(d) for d in verdict.decisions]
    if verdict.at_us is not None:
        out["at_us"] = verdict.at_us
    return out


def verdict_headers(verdict: LimitVerdict) -> list[tuple[str, str]]:
    """The ``RateLimit-Policy``/``RateLimit`` (and ``Retry-After``) headers plus
    ``X-RateLimit-Source``, for an allowed or refused response alike."""
    return [*verdict.headers, ("X-RateLimit-Source", verdict.source)]


def refusal(verdict: LimitVerdict, **extra: Any) -> Any:
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
    return problem_response(status, detail, headers=verdict_headers(verdict), **extensions)
