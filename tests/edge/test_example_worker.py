"""docs/examples/own_worker/routes.py, the README's "your own Worker" example, runs against
the in-memory bindings (on CPython and inside Pyodide)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from edge_kv.edge import api_key_kv_key
from edge_kv.edge.locks import LockServiceRpc
from edge_kv.edge.ratelimit import BLOCK_CACHE, LIMITS_CONFIG, RateLimiterRpc
from edge_kv.edge.testing import MemoryEnv, MemoryKV, MemoryNamespace, TestHeaders, TestRequest

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "own_worker" / "routes.py"
LIMITS = {
    "limits": {
        "per-customer": {
            "key": ["subject"],
            "tiers": [{"name": "customer-minute", "kind": "fixed_window", "limit": 3, "window_s": 60}],
        }
    },
    "routes": [{"prefix": "/api/", "limits": ["per-customer"]}],
}


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("own_worker_routes", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_example_worker_authenticates_limits_and_locks() -> None:
    routes = load_example()
    kv = MemoryKV()
    await kv.put(api_key_kv_key("k-live-1"), "customer-9")
    env = MemoryEnv(
        KV=kv,
        RATE_LIMITER=MemoryNamespace(RateLimiterRpc),
        LOCKS=MemoryNamespace(LockServiceRpc),
        EDGE_KV_LIMITS=json.dumps(LIMITS),
    )
    LIMITS_CONFIG.invalidate()
    BLOCK_CACHE.clear()

    async def call(method: str, path: str, **headers: str) -> Any:
        request = TestRequest("https://api.example" + path, method, TestHeaders(headers.items()))
        return await routes.router.dispatch(request, env, None)

    assert (await call("GET", "/api/orders/1")).status == 401
    assert (await call("GET", "/api/orders/1", **{"x-api-key": "wrong"})).status == 401
    ok = await call("GET", "/api/orders/1", **{"x-api-key": "k-live-1"})
    assert ok.status == 200 and ok.json() == {"order": "1", "customer": "customer-9"}
    assert ok.headers.get("ratelimit") is not None
    paid = await call("POST", "/api/orders/1/pay", **{"x-api-key": "k-live-1"})
    assert paid.status == 200 and paid.json()["fencing_token"] == 1
    assert (await call("POST", "/api/orders/1/pay", **{"x-api-key": "k-live-1"})).status == 200
    refused = await call("GET", "/api/orders/1", **{"x-api-key": "k-live-1"})
    assert refused.status == 429 and refused.headers.get("retry-after") is not None
    LIMITS_CONFIG.invalidate()
