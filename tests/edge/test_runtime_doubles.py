"""Durable Object logic, the RPC error envelope, the router, config sources and API keys,
unit-tested through the in-memory doubles of edge_kv.edge.testing (CPython and Pyodide)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from edge_kv.core.errors import EdgeKvError, InvalidInput, LockNotOwned, UpstreamFailed
from edge_kv.edge import (
    ConfigSource,
    ConfigVars,
    EdgeLock,
    HttpError,
    LockBusy,
    RouteContext,
    Router,
    api_key_kv_key,
    api_key_subject,
    enforce,
    json_response,
    read_json_object,
    require_service_token,
)
from edge_kv.edge.locks import LockLimits, LockObject, LockServiceRpc
from edge_kv.edge.ratelimit import BLOCK_CACHE, LIMITS_CONFIG, RateLimiterRpc
from edge_kv.edge.runtime import call_rpc, check_kv_key, check_kv_ttl, decode_reply, kv_put, rpc_method
from edge_kv.edge.testing import MemoryEnv, MemoryKV, MemoryNamespace, MemoryStorage, TestHeaders, TestRequest

LIMITS = LockLimits(max_ttl_ms=60_000, max_wait_ms=5_000, max_waiters=4, poll_grace_ms=1_000)


class LockShell(LockServiceRpc):
    """The shipped RPC surface with tighter bounds for the tests."""

    def __init__(self, ctx: Any, env: Any) -> None:
        self.logic = LockObject(ctx.storage, LIMITS)


LimiterShell = RateLimiterRpc


# ---- the RPC envelope -------------------------------------------------------------------


async def test_rpc_errors_keep_their_type_across_the_boundary() -> None:
    class Shell:
        @rpc_method
        async def bad(self) -> Any:
            raise LockNotOwned("not yours")

        @rpc_method
        async def crash(self) -> Any:
            raise RuntimeError("boom")

        @rpc_method
        async def fine(self, n: int) -> Any:
            return {"n": n}

    shell = Shell()
    assert await call_rpc(shell, "fine", 3) == {"n": 3}
    with pytest.raises(LockNotOwned, match="not yours") as caught:
        await call_rpc(shell, "bad")
    assert caught.value.status == 409
    with pytest.raises(UpstreamFailed) as crashed:  # a bug is a 502, never a 400
        await call_rpc(shell, "crash")
    assert crashed.value.status == 502
    with pytest.raises(InvalidInput, match="argument 1"):
        await call_rpc(shell, "fine", 2**60)  # a BigInt at the FFI: refused before the call


@pytest.mark.parametrize("raw", [None, 5, "not json", "[1]", '{"neither": 1}', '{"error": "x"}'])
def test_a_reply_that_is_not_an_envelope_is_an_upstream_failure(raw: Any) -> None:
    with pytest.raises(UpstreamFailed):
        decode_reply(raw)


def test_unknown_error_codes_keep_the_sent_status() -> None:
    with pytest.raises(EdgeKvError) as caught:
        decode_reply(json.dumps({"error": {"code": "from_the_future", "status": 418, "detail": "teapot"}}))
    assert caught.value.status == 418 and str(caught.value) == "teapot"


# ---- Durable Object logic over the in-memory storage -------------------------------------


async def test_edge_lock_through_the_namespace_double() -> None:
    ns = MemoryNamespace(LockShell)
    first = EdgeLock(ns, "invoice:42", ttl_ms=10_000)
    lease = await first.acquire()
    assert lease.token == 1
    with pytest.raises(LockBusy) as busy:
        await EdgeLock(ns, "invoice:42", ttl_ms=10_000).acquire()
    assert busy.value.status == 409 and busy.value.reason
    await first.release()
    async with EdgeLock(ns, "invoice:42", ttl_ms=10_000) as second:
        assert second.token == 2
    # Storage survives an eviction; the fencing token keeps growing.
    ns.evict()
    assert (await EdgeLock(ns, "invoice:42", ttl_ms=10_000).acquire()).token == 3


async def test_edge_lock_context_exit_matches_the_origin_locks() -> None:
    """A lease lost under the critical section raises on exit, unless the body raised."""
    ns = MemoryNamespace(LockShell)
    lock = EdgeLock(ns, "r", ttl_ms=10_000)
    with pytest.raises(LockNotOwned):
        async with lock:
            await call_rpc(ns.get(ns.idFromName("lock:r")), "release", lock.owner)
    lock2 = EdgeLock(ns, "r", ttl_ms=10_000)
    with pytest.raises(KeyError):  # the body's own exception wins
        async with lock2:
            await call_rpc(ns.get(ns.idFromName("lock:r")), "release", lock2.owner)
            raise KeyError("body")


async def test_lock_object_refuses_bad_arguments_by_type() -> None:
    ns = MemoryNamespace(LockShell)
    stub = ns.get(ns.idFromName("lock:x"))
    with pytest.raises(InvalidInput):
        await call_rpc(stub, "acquire", "short", 1000, 0)  # owner too short
    with pytest.raises(InvalidInput):
        await call_rpc(stub, "acquire", "owner-aaaa", 10**9, 0)  # above max_ttl_ms
    assert (await call_rpc(stub, "status"))["held"] is False


async def test_rate_limit_object_is_exact_under_concurrency() -> None:
    ns = MemoryNamespace(LimiterShell)
    stub = ns.get(ns.idFromName("k"))
    spec = json.dumps(
        {"tiers": [{"name": "t", "kind": "token_bucket", "capacity": 10, "refill_rate": 0.001}]}
    )
    replies = await asyncio.gather(*(call_rpc(stub, "decide", spec, "k", 1) for _ in range(30)))
    assert sum(r["decision"]["allowed"] for r in replies) == 10
    with pytest.raises(InvalidInput):
        await call_rpc(stub, "decide", spec, "k", 11)  # more than the capacity
    with pytest.raises(InvalidInput):
        await call_rpc(stub, "decide", "{not json", "k", 1)
    assert json.loads(await call_rpc(stub, "state", "k")) is not None


async def test_memory_storage_refuses_values_json_cannot_hold() -> None:
    storage = MemoryStorage()
    await storage.put("n", {"a": [1, 2.5, None]})
    assert await storage.get("n") == {"a": [1, 2.5, None]}
    with pytest.raises(InvalidInput):
        await storage.put("b", b"bytes")
    rows = storage.sql.exec("SELECT 1 AS one").toArray()
    assert rows == [{"one": 1}]


# ---- KV helpers --------------------------------------------------------------------------


async def test_kv_keys_and_ttls_are_checked_before_kv() -> None:
    kv = MemoryKV(clock=lambda: 1000.0)
    await kv_put(kv, "a", "1", ttl_s=60)
    assert await kv.get("a") == "1"
    for bad_key in ["", ".", "..", "k" * 513, "é" * 257]:
        with pytest.raises(InvalidInput):
            check_kv_key(bad_key)
    check_kv_key("k" * 512)
    check_kv_ttl(2**31 - 1)  # the binding's limit: a signed 32-bit integer
    for bad_ttl in [59, 2**31, 10**20, True, 1.5]:
        with pytest.raises(InvalidInput):
            await kv_put(kv, "a", "1", ttl_s=bad_ttl)  # type: ignore[arg-type]


async def test_memory_kv_expires_entries() -> None:
    now = [1000.0]
    kv = MemoryKV(clock=lambda: now[0])
    await kv.put("a", "1", {"expirationTtl": 60})
    assert (await kv.list(prefix="a"))["keys"] == [{"name": "a", "expiration": 1060}]
    now[0] += 61
    assert await kv.get("a") is None


# ---- the router --------------------------------------------------------------------------


def _router() -> Router:
    router = Router()

    @router.route("POST", "/echo/{name}")
    async def echo(rc: RouteContext) -> Any:
        return json_response({"name": rc.params["name"], "body": await read_json_object(rc.request)})

    @router.route("GET", "/guarded")
    async def guarded(rc: RouteContext) -> Any:
        require_service_token(rc.env, rc.request.headers.get("authorization"))
        return json_response({"ok": True})

    @router.route("GET", "/test-only", when=lambda env: getattr(env, "TEST", None) == "1")
    async def test_only(rc: RouteContext) -> Any:
        return json_response({"test": True})

    @router.route("GET", "/crash")
    async def crash(rc: RouteContext) -> Any:
        raise RuntimeError("secret internals")

    @router.route("GET", "/teapot")
    async def teapot(rc: RouteContext) -> Any:
        raise HttpError(418, "short and stout", extra=1)

    return router


async def _call(
    router: Router, method: str, path: str, body: str = "", env: Any = None, **headers: str
) -> Any:
    req = TestRequest("https://w.example" + path, method, TestHeaders(headers.items()), body)
    return await router.dispatch(req, env if env is not None else MemoryEnv(), None)


async def test_router_answers_problems_for_every_failure() -> None:
    router = _router()
    ok = await _call(router, "POST", "/echo/a%20b", '{"x": 1}')
    assert ok.status == 200 and ok.json() == {"name": "a b", "body": {"x": 1}}
    assert (await _call(router, "GET", "/nowhere")).status == 404
    wrong = await _call(router, "DELETE", "/echo/a")
    assert wrong.status == 405 and wrong.headers.get("allow") == "POST"
    crash = await _call(router, "GET", "/crash")
    assert crash.status == 500 and "secret" not in crash.body
    assert crash.headers.get("content-type") == "application/problem+json"
    teapot = await _call(router, "GET", "/teapot")
    assert teapot.status == 418 and teapot.json()["extra"] == 1
    disabled = await _call(router, "GET", "/guarded")
    assert disabled.status == 503 and disabled.json()["code"] == "service_api_disabled"
    env = MemoryEnv(EDGE_KV_SERVICE_TOKEN="s3cret")
    assert (await _call(router, "GET", "/guarded", env=env, authorization="Bearer nope")).status == 401
    assert (await _call(router, "GET", "/guarded", env=env, authorization="Bearer s3cret")).status == 200


async def test_routes_with_a_condition_exist_only_when_it_holds() -> None:
    router = _router()
    assert (await _call(router, "GET", "/test-only")).status == 404
    assert (await _call(router, "GET", "/test-only", env=MemoryEnv(TEST="1"))).status == 200


@pytest.mark.parametrize(
    "body",
    ["1" * 5000, '{"n": ' + "9" * 5000 + "}", "[" * 100 + "]" * 100, '{"a": ' * 70 + "1" + "}" * 70, "", "{"],
)
async def test_unusable_json_bodies_are_400_not_500(body: str) -> None:
    response = await _call(_router(), "POST", "/echo/x", body)
    assert response.status == 400, response.body


# ---- configuration source ----------------------------------------------------------------

VARS = ConfigVars(document="DOC", kv_key="DOC_KV_KEY", kv_binding="DOC_KV", cache_s="DOC_CACHE_S")


def _parse(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict) or "bad" in value:
        raise InvalidInput("bad document")
    return value


async def test_config_source_prefers_kv_and_ignores_a_bad_override() -> None:
    now = [0.0]
    logged: list[str] = []
    kv = MemoryKV()
    env = MemoryEnv(DOC='{"from": "var"}', DOC_KV_KEY="config:doc", KV=kv, DOC_CACHE_S="5")
    source = ConfigSource(_parse, VARS, clock=lambda: now[0], log=logged.append)
    assert await source.get(env) == {"from": "var"}
    await kv.put("config:doc", '{"from": "kv"}')
    assert await source.get(env) == {"from": "var"}  # cached for 5 s
    now[0] += 6
    assert await source.get(env) == {"from": "kv"}
    await kv.put("config:doc", '{"bad": 1}')
    now[0] += 6
    assert await source.get(env) == {"from": "var"} and "ignoring invalid DOC" in logged[-1]
    with pytest.raises(InvalidInput):
        await ConfigSource(_parse, VARS).get(MemoryEnv(DOC='{"bad": 1}'))


# ---- enforce() and API keys over the doubles ----------------------------------------------


async def test_enforce_with_durable_object_and_api_key_subject() -> None:
    kv = MemoryKV()
    await kv.put(api_key_kv_key("key-123"), "customer-7")
    limits = {
        "limits": {
            "per-subject": {
                "key": ["subject"],
                "tiers": [{"name": "w", "kind": "fixed_window", "limit": 2, "window_s": 60}],
            }
        },
        "routes": [{"prefix": "/api/", "limits": ["per-subject"]}],
    }
    env = MemoryEnv(KV=kv, RATE_LIMITER=MemoryNamespace(LimiterShell), EDGE_KV_LIMITS=json.dumps(limits))
    LIMITS_CONFIG.invalidate()
    BLOCK_CACHE.clear()
    headers = TestHeaders({"x-api-key": "key-123", "cf-connecting-ip": "192.0.2.1"})
    request = TestRequest("https://w.example/api/x", "GET", headers)
    subject = await api_key_subject(env, headers)
    assert subject == "customer-7"
    statuses = []
    for _ in range(3):
        verdict = await enforce(RouteContext(request, env, None, path="/api/x"), subject=subject)
        statuses.append(verdict.status)
    assert statuses == [None, None, 429]
    with pytest.raises(EdgeKvError) as unknown:
        await api_key_subject(env, TestHeaders({"x-api-key": "guess"}))
    assert unknown.value.status == 401
    assert await api_key_subject(env, TestHeaders()) is None
    LIMITS_CONFIG.invalidate()
