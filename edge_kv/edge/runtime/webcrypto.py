"""WebCrypto (``crypto.subtle``) for JWS signatures, and the runtime's ``fetch`` for JWKS.

Part of the runtime seam: ``js``/``pyodide`` are imported lazily, inside the functions
that need them, so this module imports (and its pure parts run) on CPython too.

:class:`WebCryptoVerifier` implements :class:`edge_kv.core.jwt.Verifier` asynchronously:
``crypto.subtle.importKey("jwk", ...)`` once per key, ``crypto.subtle.verify(...)`` per
token. Use it with :meth:`edge_kv.core.jwt.JwtValidator.verify_async` (or
:func:`edge_kv.edge.auth.jwt.verify_token`). Algorithms:

======================  ===========================================================
JWS ``alg``             WebCrypto
======================  ===========================================================
``RS256/384/512``       ``RSASSA-PKCS1-v1_5`` with ``SHA-256/384/512``
``PS256/384/512``       ``RSA-PSS``, ``saltLength`` = hash length (RFC 7518 §3.5)
``ES256/384/512``       ``ECDSA`` on ``P-256/384/521``; the JWS signature is raw
                        ``r || s``, which is WebCrypto's own format (no DER)
``EdDSA`` / ``Ed25519`` ``{name: "Ed25519"}`` (``Ed448`` where the runtime has it)
======================  ===========================================================

The core has already bound the key to its algorithm and checked the signature length;
this module only adds the runtime call. A signature that does not verify (or that the
runtime refuses to check) is ``False``; a key the runtime cannot import is
:class:`~edge_kv.core.jwt.InvalidToken` (``reason="key"``), never a 500.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_kv.core.errors import InvalidInput, UpstreamFailed
from edge_kv.core.jwt import InvalidToken, Jwk
from edge_kv.edge.runtime._ffi import js_object

__all__ = [
    "DEFAULT_MAX_CACHED_KEYS",
    "FetchedText",
    "WebCryptoVerifier",
    "fetch_text",
    "import_algorithm",
    "import_jwk",
    "verify_algorithm",
]

DEFAULT_MAX_CACHED_KEYS = 256
_HASHES = {"256": "SHA-256", "384": "SHA-384", "512": "SHA-512"}
_SALT = {"256": 32, "384": 48, "512": 64}


def _hash_of(alg: str) -> str:
    digest = _HASHES.get(alg[2:])
    if digest is None:
        raise InvalidToken(f"alg {alg!r} is not supported by WebCrypto here", "algorithm")
    return digest


def import_algorithm(alg: str, key: Jwk) -> dict[str, Any]:
    """The ``algorithm`` argument of ``importKey`` for ``key`` used with ``alg``."""
    if alg.startswith("RS") and key.kty == "RSA":
        return {"name": "RSASSA-PKCS1-v1_5", "hash": {"name": _hash_of(alg)}}
    if alg.startswith("PS") and key.kty == "RSA":
        return {"name": "RSA-PSS", "hash": {"name": _hash_of(alg)}}
    if alg.startswith("ES") and key.kty == "EC" and key.crv:
        _hash_of(alg)
        return {"name": "ECDSA", "namedCurve": key.crv}
    if alg in ("EdDSA", "Ed25519", "Ed448") and key.kty == "OKP" and key.crv:
        return {"name": key.crv}
    raise InvalidToken(f"alg {alg!r} cannot be used with a {key.kty} key", "algorithm")


def verify_algorithm(alg: str, key: Jwk) -> dict[str, Any]:
    """The ``algorithm`` argument of ``verify`` (RSA-PSS salt = hash length; ECDSA hash)."""
    if alg.startswith("RS") and key.kty == "RSA":
        _hash_of(alg)
        return {"name": "RSASSA-PKCS1-v1_5"}
    if alg.startswith("PS") and key.kty == "RSA":
        _hash_of(alg)
        return {"name": "RSA-PSS", "saltLength": _SALT[alg[2:]]}
    if alg.startswith("ES") and key.kty == "EC":
        return {"name": "ECDSA", "hash": {"name": _hash_of(alg)}}
    if alg in ("EdDSA", "Ed25519", "Ed448") and key.kty == "OKP" and key.crv:
        return {"name": key.crv}
    raise InvalidToken(f"alg {alg!r} cannot be used with a {key.kty} key", "algorithm")


def import_jwk(key: Jwk) -> dict[str, Any]:
    """The public JWK handed to ``importKey("jwk", ...)``: ``kty`` and the key material
    only (no ``alg``/``use``/``key_ops``, which the core has already checked and which
    WebCrypto would compare against its own names)."""
    if key.is_symmetric:
        raise InvalidInput("HMAC keys are verified by the core, not WebCrypto")
    return {"kty": key.kty, **dict(key.members)}


def _cache_id(alg: str, key: Jwk) -> tuple[str, str | None, str]:
    # kid + alg, plus the key material: a kid reused for a new key never finds the old one.
    return (alg, key.kid, json.dumps(dict(key.members), sort_keys=True))


def _subtle() -> Any:
    from js import crypto

    return crypto.subtle


def _js_bytes(data: bytes) -> Any:
    """``bytes`` as a ``Uint8Array`` (a copy); unchanged off the runtime."""
    try:
        from js import Uint8Array
    except ImportError:
        return bytes(data)
    array = Uint8Array.new(len(data))
    array.assign(memoryview(bytes(data)))
    return array


@dataclass
class WebCryptoVerifier:
    """:class:`~edge_kv.core.jwt.Verifier` through ``crypto.subtle``.

    Imported ``CryptoKey`` objects are cached per (alg, kid, key material) in this object
    (keep one per isolate: a module global), least recently used first out beyond
    ``max_cached_keys``. ``subtle`` replaces ``crypto.subtle`` (tests).
    """

    max_cached_keys: int = DEFAULT_MAX_CACHED_KEYS
    subtle: Any = None
    imports: int = 0
    _keys: OrderedDict[tuple[str, str | None, str], Any] = field(default_factory=OrderedDict, repr=False)

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_cached_keys, bool)
            or not isinstance(self.max_cached_keys, int)
            or not 1 <= self.max_cached_keys <= 10_000
        ):
            raise InvalidInput("max_cached_keys must be an integer in [1, 10000]")

    def _api(self) -> Any:
        if self.subtle is None:
            self.subtle = _subtle()
        return self.subtle

    @property
    def cached_keys(self) -> int:
        return len(self._keys)

    async def crypto_key(self, alg: str, key: Jwk) -> Any:
        """The imported ``CryptoKey`` for ``key`` with ``alg`` (imported on first use)."""
        ident = _cache_id(alg, key)
        found = self._keys.get(ident)
        if found is not None:
            self._keys.move_to_end(ident)
            return found
        params = import_algorithm(alg, key)
        jwk = import_jwk(key)
        try:
            imported = await self._api().importKey(
                "jwk", js_object(jwk), js_object(params), False, js_object(["verify"])
            )
        except Exception as exc:  # JsException: NotSupportedError, DataError, ...
            name = getattr(exc, "name", None) or type(exc).__name__
            raise InvalidToken(
                f"the runtime cannot use this {alg} key ({params['name']}: {name})", "key"
            ) from None
        self.imports += 1
        self._keys[ident] = imported
        while len(self._keys) > self.max_cached_keys:
            self._keys.popitem(last=False)
        return imported

    async def verify(self, alg: str, key: Jwk, signing_input: bytes, signature: bytes) -> bool:
        crypto_key = await self.crypto_key(alg, key)
        try:
            ok = await self._api().verify(
                js_object(verify_algorithm(alg, key)),
                crypto_key,
                _js_bytes(signature),
                _js_bytes(signing_input),
            )
        except InvalidToken:
            raise
        except Exception:  # the runtime refused to check it: not a valid signature
            return False
        return ok is True


# --------------------------------------------------------------------------------------
# fetch
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchedText:
    """A fetched response reduced to what a JWKS cache needs."""

    status: int
    text: str
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-cased names

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


async def fetch_text(
    url: str, *, timeout_s: float = 5.0, max_bytes: int = 256 * 1024, accept: str = "application/json"
) -> FetchedText:
    """``GET url`` with the runtime's ``fetch``: status, body text (at most ``max_bytes``
    UTF-8 bytes) and the ``cache-control``/``content-type``/``age`` headers.

    Raises :class:`~edge_kv.core.errors.UpstreamFailed` when the request fails, times
    out (``AbortSignal.timeout``) or the body is too large.
    """
    import asyncio

    from js import AbortSignal, fetch

    init: dict[str, Any] = {"method": "GET", "headers": {"accept": accept}, "redirect": "follow"}
    timeout_ms = max(1, int(timeout_s * 1000))
    if hasattr(AbortSignal, "timeout"):
        init["signal"] = AbortSignal.timeout(timeout_ms)

    async def go() -> FetchedText:
        response = await fetch(url, js_object(init))
        length = response.headers.get("content-length")
        if length is not None and str(length).isdigit() and int(str(length)) > max_bytes:
            raise UpstreamFailed(f"{url}: response of {length} bytes exceeds {max_bytes}")
        text = str(await response.text())
        if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
            raise UpstreamFailed(f"{url}: response exceeds {max_bytes} bytes")
        headers: dict[str, str] = {}
        for name in ("cache-control", "content-type", "age"):
            value = response.headers.get(name)
            if value is not None:
                headers[name] = str(value)
        return FetchedText(int(response.status), text, headers)

    try:
        return await asyncio.wait_for(go(), timeout_s + 1.0)
    except UpstreamFailed:
        raise
    except Exception as exc:  # JsException (network, abort), TimeoutError
        name = getattr(exc, "name", None) or type(exc).__name__
        raise UpstreamFailed(f"fetching {url} failed ({name})") from None
