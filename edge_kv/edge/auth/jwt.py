"""Bearer JWTs at the edge: the core's strict parsing and claims checks, keys from a static
JWKS or from an issuer's ``jwks_uri`` (through :class:`~edge_kv.edge.auth.jwks.JwksCache`),
asymmetric signatures checked with WebCrypto (awaited).

::

    auth = JwtAuthenticator(JwtPolicy(issuer="https://idp.example", audience="edge-api"),
                            jwks_uri="https://idp.example/.well-known/jwks.json")
    token = await auth.authenticate_header(request.headers.get("authorization"))
    token.subject, token.scopes

Every refusal is :class:`~edge_kv.core.jwt.InvalidToken` (401, with ``reason`` and
``www_authenticate()``); an issuer whose keys cannot be had is
:class:`~edge_kv.edge.auth.jwks.JwksUnavailable` (503). Cheap header checks (size,
structure, ``alg``, ``kid`` type) run before any key is fetched, so garbage never reaches
the JWKS endpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from edge_kv.core.errors import InvalidInput
from edge_kv.core.jwt import (
    HMAC_ALGORITHMS,
    InvalidToken,
    Jwk,
    JwkSet,
    JwtPolicy,
    JwtValidator,
    VerifiedJwt,
    Verifier,
    peek_header,
)
from edge_kv.edge.auth.jwks import JwksCache
from edge_kv.edge.runtime.webcrypto import WebCryptoVerifier

__all__ = [
    "JwtAuthenticator",
    "bearer_token",
    "shared_jwks_cache",
    "shared_verifier",
    "verify_token",
]

_VERIFIER: WebCryptoVerifier | None = None
_JWKS: JwksCache | None = None


def shared_verifier() -> WebCryptoVerifier:
    """The isolate's :class:`WebCryptoVerifier` (its imported keys live as long as the isolate)."""
    global _VERIFIER
    if _VERIFIER is None:
        _VERIFIER = WebCryptoVerifier()
    return _VERIFIER


def shared_jwks_cache() -> JwksCache:
    """The isolate's JWKS cache with the default policy."""
    global _JWKS
    if _JWKS is None:
        _JWKS = JwksCache()
    return _JWKS


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header (RFC 6750 §2.1)."""
    if not authorization:
        raise InvalidToken("no bearer token", "missing")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise InvalidToken("the Authorization header is not 'Bearer <token>'", "malformed")
    return token


async def verify_token(
    token: str,
    *,
    policy: JwtPolicy,
    keys: JwkSet | Sequence[Jwk] | None = None,
    jwks_uri: str | None = None,
    cache: JwksCache | None = None,
    default_alg: str | None = None,
    verifier: Verifier | None = None,
    now: float | None = None,
) -> VerifiedJwt:
    """Verify ``token`` against static ``keys`` or the keys of ``jwks_uri`` (exactly one)."""
    if (keys is None) == (jwks_uri is None):
        raise InvalidInput("give exactly one of keys and jwks_uri")
    header = peek_header(token, max_bytes=policy.max_token_bytes)
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg or alg.strip().lower() == "none":
        raise InvalidToken("alg is missing or 'none'", "algorithm")
    if policy.algorithms is not None and alg not in policy.algorithms:
        raise InvalidToken(f"alg {alg!r} is not accepted", "algorithm")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidToken("kid must be a string", "header")
    if jwks_uri is not None:
        found: list[Jwk] = await (cache or shared_jwks_cache()).keys(
            jwks_uri, kid=kid, default_alg=default_alg
        )
    else:
        assert keys is not None
        found = list(keys.keys if isinstance(keys, JwkSet) else keys)
    usable = [k for k in found if k.alg == alg]
    if not usable:
        raise InvalidToken(f"alg {alg!r} is not accepted for this issuer", "algorithm")
    if verifier is None and alg not in HMAC_ALGORITHMS:
        verifier = shared_verifier()
    validator = JwtValidator(usable, policy, verifier=verifier)
    return await validator.verify_async(token, now=time.time() if now is None else now)


class JwtAuthenticator:
    """One issuer's configuration: policy and keys (static or ``jwks_uri``)."""

    def __init__(
        self,
        policy: JwtPolicy,
        *,
        keys: JwkSet | Sequence[Jwk] | None = None,
        jwks_uri: str | None = None,
        cache: JwksCache | None = None,
        default_alg: str | None = None,
        verifier: Verifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (keys is None) == (jwks_uri is None):
            raise InvalidInput("give exactly one of keys and jwks_uri")
        if not isinstance(policy, JwtPolicy):
            raise InvalidInput("policy must be a JwtPolicy")
        self.policy = policy
        self.keys = keys
        self.jwks_uri = jwks_uri
        self.cache = cache
        self.default_alg = default_alg
        self.verifier = verifier
        self.clock = clock

    async def authenticate(self, token: str) -> VerifiedJwt:
        return await verify_token(
            token,
            policy=self.policy,
            keys=self.keys,
            jwks_uri=self.jwks_uri,
            cache=self.cache,
            default_alg=self.default_alg,
            verifier=self.verifier,
            now=self.clock(),
        )

    async def authenticate_header(self, authorization: str | None) -> VerifiedJwt:
        return await self.authenticate(bearer_token(authorization))
