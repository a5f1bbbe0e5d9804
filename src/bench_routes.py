"""Test-only routes for scripts/bench_gateway.py (registered only when ``EDGE_KV_TEST_CLOCK``
is set; in production they do not exist: 404).

``POST /__bench/jwt``: verify one token ``n`` times inside one request, the way the gateway
does (:func:`edge_kv.edge.auth.jwt.verify_token` with static keys, imported keys cached in
the isolate), and answer the time measured inside Pyodide. Body::

    {"token": str, "jwks": {...}, "issuer": str?, "audience": str?, "algorithms": [str]?,
     "n": int (1..100000)}

200 ``{"n", "elapsed_s", "verifications_per_s", "key_imports"}``; a refused token is a 401.
The clock is ``time.perf_counter``: it advances in the offline host; on Cloudflare the
clock does not move during a request's CPU work, so the figure means nothing there.

``GET /__passthrough/{path}``: the bare pass-through proxy the gateway is measured
against: forwards the request (method, headers minus connection-level ones, query) to
``EDGE_KV_PASSTHROUGH_ORIGIN`` + ``/{path}`` with :func:`edge_kv.edge.runtime.fetch_origin`
and streams the answer back. No authentication, no limits, no routing, no signing.
"""

from __future__ import annotations

import time
from typing import Any

from edge_kv.core.errors import EdgeKvError
from edge_kv.core.jwt import InvalidToken, JwtPolicy, parse_jwks
from edge_kv.core.validate import check_int_range
from edge_kv.edge import (
    HttpError,
    RouteContext,
    Router,
    bad_request,
    json_response,
    problem_response,
    read_json_object,
)
from edge_kv.edge.auth.jwt import shared_verifier, verify_token
from edge_kv.edge.env import env_str
from edge_kv.edge.ratelimit.service_api import test_clock_enabled
from edge_kv.edge.runtime import fetch_origin, request_headers, request_method, streaming_response

__all__ = ["PASSTHROUGH_ORIGIN_VAR", "register"]

PASSTHROUGH_ORIGIN_VAR = "EDGE_KV_PASSTHROUGH_ORIGIN"
PASSTHROUGH_TIMEOUT_MS = 10_000
_CONNECTION_FIELDS = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "te", "upgrade"}
)


async def jwt_batch(rc: RouteContext) -> Any:
    body = await read_json_object(rc.request)
    token = body.get("token")
    if not isinstance(token, str):
        raise bad_request("'token' must be a string")
    n = check_int_range("'n'", body.get("n", 100), 1, 100_000)
    algorithms = body.get("algorithms")
    if algorithms is not None and (
        not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms)
    ):
        raise bad_request("'algorithms' must be a list of strings")
    policy = JwtPolicy(
        issuer=body.get("issuer"),
        audience=body.get("audience"),
        algorithms=frozenset(algorithms) if algorithms is not None else None,
    )
    if not isinstance(body.get("jwks"), dict):
        raise bad_request("'jwks' must be a JWKS object")
    keys = parse_jwks(body["jwks"])
    try:
        await verify_token(token, policy=policy, keys=keys)  # warm: the key is imported once
        began = time.perf_counter()
        for _ in range(n):
            await verify_token(token, policy=policy, keys=keys)
        elapsed = time.perf_counter() - began
    except InvalidToken as exc:
        return problem_response(exc.status, exc.detail, code=exc.code, reason=exc.reason)
    return json_response(
        {
            "n": n,
            "elapsed_s": elapsed,
            "verifications_per_s": n / elapsed if elapsed > 0 else None,
            "key_imports": shared_verifier().imports,
        }
    )


async def passthrough(rc: RouteContext) -> Any:
    origin = env_str(rc.env, PASSTHROUGH_ORIGIN_VAR)
    if origin is None:
        raise HttpError(503, f"set {PASSTHROUGH_ORIGIN_VAR} to use the pass-through route")
    target = origin.rstrip("/") + "/" + rc.params["path"] + (f"?{rc.query}" if rc.query else "")
    headers = [(k, v) for k, v in request_headers(rc.request) if k not in _CONNECTION_FIELDS]
    try:
        response = await fetch_origin(
            target, request_method(rc.request), headers, None, timeout_ms=PASSTHROUGH_TIMEOUT_MS
        )
    except EdgeKvError as exc:
        return problem_response(exc.status, exc.detail or None, code=exc.code)
    # Like the gateway, answer chunked: the origin's length and connection fields do not pass.
    back = [(k, v) for k, v in response.headers if k.lower() not in _CONNECTION_FIELDS]
    return streaming_response(response.status, back, response.body)


def register(router: Router) -> None:
    router.route("POST", "/__bench/jwt", when=test_clock_enabled)(jwt_batch)
    router.route("GET", "/__passthrough/{path}", when=test_clock_enabled)(passthrough)
