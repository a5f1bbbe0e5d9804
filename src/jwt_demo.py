"""``POST /__jwt/verify``: JWT verification inside the Worker, for the HTTP tests.

Registered only when ``EDGE_KV_TEST_CLOCK`` is set (a test configuration); in production
the route does not exist (404). Body::

    {"token": str, "jwks": {...} | "jwks_uri": str, "issuer": str?, "audience": str?,
     "algorithms": [str, ...]?, "leeway_s": int?}

200 ``{"valid": true, "claims": {...}, "alg", "kid", "key_imports", "jwks"}``; a refused
token is a 401 problem with ``reason`` and ``WWW-Authenticate: Bearer ...``; an unusable
JWKS document is a 400; an issuer whose ``jwks_uri`` cannot be fetched (nothing cached) a 503.
"""

from __future__ import annotations

from typing import Any

from edge_kv.core.jwt import InvalidToken, JwtPolicy, parse_jwks
from edge_kv.edge import RouteContext, Router, bad_request, json_response, problem_response, read_json_object
from edge_kv.edge.auth.jwks import JwksCache, JwksCachePolicy
from edge_kv.edge.auth.jwt import shared_verifier, verify_token
from edge_kv.edge.ratelimit.service_api import test_clock_enabled

__all__ = ["register"]

# The isolate's cache for the jwks_uri variant; plain http is allowed only because this
# route exists only in test configurations (its JWKS servers run on 127.0.0.1).
_CACHE = JwksCache(JwksCachePolicy(allow_http=True, min_ttl_s=1, default_ttl_s=60, failure_backoff_s=10))


def _str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and (not isinstance(value, str) or not value):
        raise bad_request(f"'{name}' must be a non-empty string")
    return value


async def verify(rc: RouteContext) -> Any:
    body = await read_json_object(rc.request)
    token = body.get("token")
    if not isinstance(token, str):
        raise bad_request("'token' must be a string")
    algorithms = body.get("algorithms")
    if algorithms is not None and (
        not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms)
    ):
        raise bad_request("'algorithms' must be a list of strings")
    leeway = body.get("leeway_s", 30)
    policy = JwtPolicy(
        issuer=_str(body, "issuer"),
        audience=_str(body, "audience"),
        algorithms=frozenset(algorithms) if algorithms is not None else None,
        leeway_s=leeway,
    )
    jwks_uri = _str(body, "jwks_uri")
    if (body.get("jwks") is None) == (jwks_uri is None):
        raise bad_request("give exactly one of 'jwks' and 'jwks_uri'")
    keys = parse_jwks(body["jwks"]) if jwks_uri is None else None
    try:
        verified = await verify_token(token, policy=policy, keys=keys, jwks_uri=jwks_uri, cache=_CACHE)
    except InvalidToken as exc:
        return problem_response(
            exc.status,
            exc.detail,
            headers=[("www-authenticate", exc.www_authenticate("edge-kv"))],
            code=exc.code,
            reason=exc.reason,
        )
    return json_response(
        {
            "valid": True,
            "claims": dict(verified.claims),
            "alg": verified.key.alg,
            "kid": verified.key.kid,
            "key_imports": shared_verifier().imports,
            "jwks": _CACHE.stats(jwks_uri) if jwks_uri else None,
        }
    )


def register(router: Router) -> None:
    router.route("POST", "/__jwt/verify", when=test_clock_enabled)(verify)
