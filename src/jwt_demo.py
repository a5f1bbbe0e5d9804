"""``POST /__jwt/verify``: JWT verification inside the Worker, for the HTTP tests.

Registered only when ``EDGE_KV_TEST_CLOCK`` is set (a test configuration); in production
the route does not exist (404). Body::

    {"token": str, "jwks": {...} | "jwks_uri": str, "issuer": str?, "audience": str?,
     "algorithms": [str, ...]?, "leeway_s": int?,
     "now": number?, "required_claims": [str, ...]?, "default_alg": str?,
     "payload_only": bool?}

200 ``{"valid": true, "claims": {...}, "alg", "kid", "key_imports", "jwks"}``; a refused
token is a 401 problem with ``reason`` and ``WWW-Authenticate: Bearer ...``; an unusable
JWKS document is a 400; an issuer whose ``jwks_uri`` cannot be fetched (nothing cached) a 503.

Published vectors (RFC 7515, 7520, 8037) are old or carry no claims at all, so, this
route being test-only, a request may also set the clock (``now``, epoch seconds), the
claims that must be present (``required_claims``, default ``["exp"]``), the algorithm of
JWKs without ``alg`` (``default_alg``), and ``payload_only``: verify the JWS signature
(header rules, key choice, HMAC or WebCrypto) over any payload, not a JWT claims set, and
answer ``{"valid": true, "payload_b64", "payload" (UTF-8 text or null), "header", "alg",
"kid"}``. ``payload_only`` works with an inline ``jwks`` only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from typing import Any

from edge_kv.core.jwt import (
    HMAC_ALGORITHMS,
    InvalidToken,
    JwkSet,
    JwtPolicy,
    b64url_decode,
    parse_jwks,
)
from edge_kv.edge import RouteContext, Router, bad_request, json_response, problem_response, read_json_object
from edge_kv.edge.auth.jwks import JwksCache, JwksCachePolicy
from edge_kv.edge.auth.jwt import shared_verifier, verify_token
from edge_kv.edge.ratelimit.service_api import test_clock_enabled

__all__ = ["register"]

# The isolate's cache for the jwks_uri variant; plain http is allowed only because this
# route exists only in test configurations (its JWKS servers run on 127.0.0.1).
_CACHE = JwksCache(JwksCachePolicy(allow_http=True, min_ttl_s=1, default_ttl_s=60, failure_backoff_s=10))
_MAX_JWS_BYTES = 16 * 1024


def _str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and (not isinstance(value, str) or not value):
        raise bad_request(f"'{name}' must be a non-empty string")
    return value


def _str_list(body: dict[str, Any], name: str) -> list[str] | None:
    value = body.get(name)
    if value is not None and (not isinstance(value, list) or not all(isinstance(a, str) for a in value)):
        raise bad_request(f"'{name}' must be a list of strings")
    return value


def _refusal(exc: InvalidToken) -> Any:
    return problem_response(
        exc.status,
        exc.detail,
        headers=[("www-authenticate", exc.www_authenticate("edge-kv"))],
        code=exc.code,
        reason=exc.reason,
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise ValueError(f"duplicate member {name!r}")
        out[name] = value
    return out


async def _verify_jws(token: str, keys: JwkSet, algorithms: frozenset[str] | None) -> dict[str, Any]:
    """A compact JWS over any payload: the signature only, with the core's header rules
    (no ``none``, no ``crit``, no ``b64: false``, ``kid`` selects, signature length)."""
    if len(token) > _MAX_JWS_BYTES or not token.isascii():
        raise InvalidToken("the JWS is too large or not ASCII", "malformed")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken(f"a JWS has 3 dot-separated segments, this has {len(parts)}", "malformed")
    try:
        header_b, payload, signature = (b64url_decode(p) for p in parts)
        header = json.loads(header_b.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise InvalidToken(f"the JWS is malformed: {exc}", "malformed") from None
    if not isinstance(header, dict) or not signature:
        raise InvalidToken("the header is not a JSON object or the signature is empty", "malformed")
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg or alg.strip().lower() == "none":
        raise InvalidToken("alg is missing or 'none'", "algorithm")
    if algorithms is not None and alg not in algorithms:
        raise InvalidToken(f"alg {alg!r} is not accepted", "algorithm")
    if "crit" in header or ("b64" in header and header["b64"] is not True) or "zip" in header:
        raise InvalidToken("crit, b64 and zip are not understood", "header")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidToken("kid must be a string", "header")
    same_alg = [k for k in keys.keys if k.alg == alg]
    if not same_alg:
        raise InvalidToken(f"alg {alg!r} is not accepted for these keys", "algorithm")
    candidates = [k for k in same_alg if k.kid == kid] or [k for k in same_alg if k.kid is None]
    if not candidates:
        raise InvalidToken(f"no {alg} key with kid {kid!r}", "key")
    signing_input = (parts[0] + "." + parts[1]).encode("ascii")
    for key in candidates:
        length = key.signature_length()
        if length is not None and length != len(signature):
            continue
        if key.is_symmetric:
            mac = hmac.new(key.secret, signing_input, HMAC_ALGORITHMS[alg]).digest()
            ok = hmac.compare_digest(mac, signature)
        else:
            ok = await shared_verifier().verify(alg, key, signing_input, signature) is True
        if ok:
            try:
                text: str | None = payload.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            return {
                "valid": True,
                "payload_b64": parts[1],
                "payload": text,
                "payload_sha256": hashlib.sha256(payload).hexdigest(),
                "header": header,
                "alg": alg,
                "kid": key.kid,
            }
    raise InvalidToken("the signature does not verify", "signature")


async def verify(rc: RouteContext) -> Any:
    body = await read_json_object(rc.request)
    token = body.get("token")
    if not isinstance(token, str):
        raise bad_request("'token' must be a string")
    algorithms = _str_list(body, "algorithms")
    required = _str_list(body, "required_claims")
    leeway = body.get("leeway_s", 30)
    now = body.get("now")
    if now is not None and (
        isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now)
    ):
        raise bad_request("'now' must be a number of seconds since the epoch")
    policy = JwtPolicy(
        issuer=_str(body, "issuer"),
        audience=_str(body, "audience"),
        algorithms=frozenset(algorithms) if algorithms is not None else None,
        leeway_s=leeway,
        required_claims=tuple(required) if required is not None else ("exp",),
    )
    jwks_uri = _str(body, "jwks_uri")
    if (body.get("jwks") is None) == (jwks_uri is None):
        raise bad_request("give exactly one of 'jwks' and 'jwks_uri'")
    keys = parse_jwks(body["jwks"], default_alg=_str(body, "default_alg")) if jwks_uri is None else None
    payload_only = body.get("payload_only", False)
    if not isinstance(payload_only, bool):
        raise bad_request("'payload_only' must be a boolean")
    if payload_only:
        if keys is None:
            raise bad_request("'payload_only' needs an inline 'jwks'")
        try:
            return json_response(await _verify_jws(token, keys, policy.algorithms))
        except InvalidToken as exc:
            return _refusal(exc)
    try:
        verified = await verify_token(
            token, policy=policy, keys=keys, jwks_uri=jwks_uri, cache=_CACHE, now=now
        )
    except InvalidToken as exc:
        return _refusal(exc)
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
