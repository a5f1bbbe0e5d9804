"""The reference Worker: ``Default`` routes requests; Durable Object classes are exported here.

Every binding kind is exercised end to end: ``/__health``, KV (``/kv/{key}``), the Cache API
(``/cache/{key}``), and the ``Counter`` Durable Object through both ``stub.fetch`` and RPC.
Features add routes with ``@router.route(...)`` in their own module and import it below.
"""

from __future__ import annotations

import asyncio
import sys
import traceback
from typing import Any

from workers import WorkerEntrypoint

import bench_routes
import debug_routes
import edge_limits
import jwt_demo
import outbox_demo
from counter import Counter
from edge_kv.edge import (
    HttpError,
    RouteContext,
    Router,
    bad_request,
    json_response,
    problem_response,
    read_json_object,
    require_service_token,
    text_response,
)
from edge_kv.edge.gateway import Gateway
from edge_kv.edge.locks import register_service_api as register_lock_api
from edge_kv.edge.objects import LockService, RateLimiter
from edge_kv.edge.ratelimit import register_service_api as register_limit_api
from edge_kv.edge.runtime import (
    call_rpc,
    check_kv_key,
    check_kv_ttl,
    js_response,
    kv_delete,
    kv_get,
    kv_put,
    open_cache,
    request_cf,
)
from outbox_demo import OutboxDemo

__all__ = ["Counter", "Default", "LockService", "OutboxDemo", "RateLimiter"]

GATEWAY = Gateway()  # per isolate: configuration cache, health marks, block cache
router = Router()
edge_limits.register(router)  # /limited/* (docs/edge-limits-locks.md)
register_limit_api(router)  # /ratelimit/*
register_lock_api(router)  # /locks/*
debug_routes.register(router)  # /__stream, /echo-stream
jwt_demo.register(router)  # POST /__jwt/verify (test configurations only)
bench_routes.register(router)  # POST /__bench/jwt, GET /__passthrough/{path} (test configurations only)
outbox_demo.register(router)  # /outbox/* (only with EDGE_KV_OUTBOX_URL; docs/messaging.md)
CACHE_ORIGIN = "https://cache.edge-kv.internal"


@router.route("GET", "/__health")
async def health(rc: RouteContext) -> Any:
    return json_response(
        {
            "ok": True,
            "python": sys.version.split()[0],
            "env": getattr(rc.env, "EDGE_KV_ENV", None),
            "colo": request_cf(rc.request).get("colo"),
        }
    )


@router.route("GET", "/__cf")
async def show_cf(rc: RouteContext) -> Any:
    cf = request_cf(rc.request) if getattr(rc.request, "cf", None) is not None else None
    return json_response({"cf": cf, "connecting_ip": rc.request.headers.get("cf-connecting-ip")})


@router.route("GET", "/__error")
async def error(rc: RouteContext) -> Any:
    raise RuntimeError("deliberate failure for the 500 path")


@router.route("POST", "/echo")
async def echo(rc: RouteContext) -> Any:
    return json_response({"json": await read_json_object(rc.request)})


# ---- KV ----
# The public demo routes only ever touch keys under DEMO_KV_PREFIX, so they cannot mint
# API keys (``apikey:*``) or rewrite the limits configuration (``config:*``). Writing any
# other key is the admin route's job and needs the service token.

DEMO_KV_PREFIX = "demo:"


async def _kv_write(rc: RouteContext, key: str) -> Any:
    body = await read_json_object(rc.request)
    value = body.get("value")
    if not isinstance(value, str):
        raise bad_request("'value' must be a string")
    ttl = body.get("ttl")
    if ttl is not None:
        try:
            check_kv_ttl(ttl)
        except ValueError as exc:
            raise bad_request(f"'ttl': {exc}") from None
    await kv_put(rc.env.KV, key, value, ttl_s=ttl)
    return json_response({"key": rc.params["key"], "stored": True})


@router.route("PUT", "/kv/{key}")
async def kv_put_route(rc: RouteContext) -> Any:
    return await _kv_write(rc, DEMO_KV_PREFIX + rc.params["key"])


@router.route("GET", "/kv/{key}")
async def kv_get_route(rc: RouteContext) -> Any:
    value = await kv_get(rc.env.KV, DEMO_KV_PREFIX + rc.params["key"])
    if value is None:
        raise HttpError(404, f"no KV value for {rc.params['key']!r}")
    return json_response({"key": rc.params["key"], "value": value})


@router.route("GET", "/kv-meta/{key}")
async def kv_meta(rc: RouteContext) -> Any:
    stored_key = check_kv_key(DEMO_KV_PREFIX + rc.params["key"])
    listing = await rc.env.KV.list(prefix=stored_key)
    for entry in listing["keys"]:  # a dict: attribute access would find dict.keys
        if entry["name"] == stored_key:
            return json_response({"key": rc.params["key"], "expiration": entry.get("expiration")})
    raise HttpError(404, f"no KV value for {rc.params['key']!r}")


@router.route("DELETE", "/kv/{key}")
async def kv_delete_route(rc: RouteContext) -> Any:
    await kv_delete(rc.env.KV, DEMO_KV_PREFIX + rc.params["key"])
    return json_response({"key": rc.params["key"], "deleted": True})


def _require_service_token(rc: RouteContext) -> None:
    require_service_token(rc.env, rc.request.headers.get("authorization"))


@router.route("PUT", "/admin/kv/{key}")
async def admin_kv_put(rc: RouteContext) -> Any:
    """Provision any KV key (hashed API keys, the limits document); service token required."""
    _require_service_token(rc)
    return await _kv_write(rc, rc.params["key"])


@router.route("DELETE", "/admin/kv/{key}")
async def admin_kv_delete(rc: RouteContext) -> Any:
    _require_service_token(rc)
    await kv_delete(rc.env.KV, rc.params["key"])
    return json_response({"key": rc.params["key"], "deleted": True})


# ---- Cache API ----


async def _cache(rc: RouteContext) -> Any:
    name = dict(p.split("=", 1) for p in rc.query.split("&") if "=" in p).get("cache")
    return await open_cache(name)


@router.route("PUT", "/cache/{key}")
async def cache_put(rc: RouteContext) -> Any:
    body = await read_json_object(rc.request)
    value, max_age = body.get("value"), body.get("max_age", 60)
    if not isinstance(value, str):
        raise bad_request("'value' must be a string")
    if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 1:
        raise bad_request("'max_age' must be an integer >= 1")
    if max_age > 10**9:
        raise bad_request("'max_age' must be at most 1000000000")
    headers = [("cache-control", f"max-age={max_age}"), ("content-type", "text/plain")]
    cache = await _cache(rc)
    await cache.put(f"{CACHE_ORIGIN}/{rc.params['key']}", js_response(text_response(value, headers=headers)))
    return json_response({"key": rc.params["key"], "cached": True, "max_age": max_age})


@router.route("GET", "/cache/{key}")
async def cache_get(rc: RouteContext) -> Any:
    cache = await _cache(rc)
    hit = await cache.match(f"{CACHE_ORIGIN}/{rc.params['key']}")
    if hit is None:
        raise HttpError(404, f"no cache entry for {rc.params['key']!r}", cache="MISS")
    return json_response({"key": rc.params["key"], "value": await hit.text(), "cache": "HIT"})


# ---- Durable Object counter ----


def _counter(rc: RouteContext) -> Any:
    return rc.env.COUNTER.get(rc.env.COUNTER.idFromName(rc.params["name"]))


@router.route("POST", "/do/counter/{name}/increment")
async def counter_increment(rc: RouteContext) -> Any:
    body = await read_json_object(rc.request)
    value = await call_rpc(_counter(rc), "increment", body.get("by", 1))
    return json_response({"name": rc.params["name"], "value": value})


@router.route("GET", "/do/counter/{name}")
async def counter_fetch(rc: RouteContext) -> Any:
    response = await _counter(rc).fetch("https://counter.internal/value")
    return json_response({"name": rc.params["name"], **(await response.json())})


@router.route("POST", "/do/counter/{name}/alarm")
async def counter_alarm(rc: RouteContext) -> Any:
    body = await read_json_object(rc.request)
    when = await call_rpc(_counter(rc), "schedule_alarm", body.get("delay_ms", 1000))
    return json_response({"name": rc.params["name"], "scheduled": when})


@router.route("GET", "/do/counter/{name}/alarm")
async def counter_alarm_state(rc: RouteContext) -> Any:
    state = await call_rpc(_counter(rc), "alarm_state")
    return json_response({"name": rc.params["name"], **dict(state)})


@router.route("POST", "/do/counter/{name}/sql")
async def counter_sql(rc: RouteContext) -> Any:
    body = await read_json_object(rc.request)
    rows = await call_rpc(_counter(rc), "sql_roundtrip", body.get("text"))
    return json_response({"rows": [dict(r) for r in rows]})


# ---- ctx.waitUntil ----


@router.route("POST", "/wait-until/{key}")
async def wait_until(rc: RouteContext) -> Any:
    """Answers at once; the KV write happens afterwards, in ``ctx.waitUntil``."""
    key = rc.params["key"]
    stored_key = check_kv_key(DEMO_KV_PREFIX + key)

    async def later() -> None:
        await asyncio.sleep(0.3)
        await kv_put(rc.env.KV, stored_key, "done")

    rc.ctx.waitUntil(asyncio.ensure_future(later()))
    return json_response({"key": key, "scheduled": True}, status=202)


class Default(WorkerEntrypoint):
    async def fetch(self, request: Any) -> Any:
        try:
            # The gateway answers the routes EDGE_KV_GATEWAY configures; the rest are ours.
            answer = await GATEWAY.handle(request, self.env, self.ctx)
            if answer is not None:
                return answer
            return await router.dispatch(request, self.env, self.ctx)
        except Exception:  # dispatch never raises; the gateway only on a bug
            print(f"Unhandled exception in the Worker:\n{traceback.format_exc()}")
            return problem_response(500, "The Worker failed to handle the request.")
