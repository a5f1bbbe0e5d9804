"""JSON Web Tokens for the edge: strict compact JWS (RFC 7515), JWT claims (RFC 7519),
algorithms and keys (RFC 7518, RFC 7517), following the JWT BCP (RFC 8725).

Standard library only (runs inside Pyodide). HMAC (``HS256``/``HS384``/``HS512``) is
verified here; asymmetric algorithms (``RS*``, ``PS*``, ``ES*``, ``EdDSA``/``Ed25519``/
``Ed448``) are delegated to a :class:`Verifier` the caller plugs in (WebCrypto at the
edge, ``cryptography`` at the origin). The core hands it the exact JWS signing input, the
key and the signature as carried in the token (for ``ES*`` the raw ``r || s``, RFC 7518
§3.4, *not* DER), after checking the signature length for the key.

What the token can never do (RFC 8725 §2.1, §3.1, §3.2):

* choose its algorithm: each :class:`Jwk` fixes exactly one ``alg`` (from the JWK, the
  caller, or the only possibility for its curve); a token whose header names another is
  refused, so an RSA public key can never be used as an HMAC secret, and ``none`` (any
  casing) is refused before anything else;
* choose its key from outside: ``jku``, ``x5u``, ``jwk`` and ``x5c`` header parameters are
  ignored — keys come only from the configuration (the JWKS fetched by the edge);
* smuggle semantics: an unknown ``crit`` entry, ``b64: false`` (RFC 7797) and ``zip`` are
  refused; header and claims must be JSON objects without duplicate members.

Errors: a token that does not verify raises :class:`InvalidToken` (401, ``error =
"invalid_token"`` for RFC 6750's ``WWW-Authenticate: Bearer``), with a ``reason``; bad
configuration (a weak key, an inconsistent JWK) raises
:class:`~edge_kv.core.errors.InvalidInput`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import json
import math
import re
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from edge_kv.core.errors import EdgeKvError, InvalidInput

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "HMAC_ALGORITHMS",
    "MAX_TOKEN_BYTES",
    "MIN_RSA_BITS",
    "InvalidToken",
    "Jwk",
    "JwkSet",
    "JwtPolicy",
    "JwtValidator",
    "ParsedJws",
    "VerifiedJwt",
    "Verifier",
    "b64url_decode",
    "b64url_encode",
    "encode_hs",
    "parse_compact",
    "parse_jwk",
    "parse_jwks",
    "peek_header",
    "verify_jwt",
    "verify_jwt_async",
]

MAX_TOKEN_BYTES = 8192
MIN_RSA_BITS = 2048
MAX_JSON_DEPTH = 16

HMAC_ALGORITHMS: Mapping[str, Any] = {
    "HS256": hashlib.sha256,
    "HS384": hashlib.sha384,
    "HS512": hashlib.sha512,
}
_HMAC_MIN_KEY = {"HS256": 32, "HS384": 48, "HS512": 64}  # RFC 7518 §3.2
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGS = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_OKP_ALGS = {"EdDSA": ("Ed25519", "Ed448"), "Ed25519": ("Ed25519",), "Ed448": ("Ed448",)}
ASYMMETRIC_ALGORITHMS = frozenset(_RSA_ALGS | set(_EC_ALGS) | set(_OKP_ALGS))
_KTY_FOR = {
    **{a: "oct" for a in HMAC_ALGORITHMS},
    **{a: "RSA" for a in _RSA_ALGS},
    **{a: "EC" for a in _EC_ALGS},
    **{a: "OKP" for a in _OKP_ALGS},
}

# Short Weierstrass curves y^2 = x^3 - 3x + b (mod p): (p, b, coordinate bytes).
_CURVES: Mapping[str, tuple[int, int, int]] = {
    "P-256": (
        2**256 - 2**224 + 2**192 + 2**96 - 1,
        0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
        32,
    ),
    "P-384": (
        2**384 - 2**128 - 2**96 + 2**32 - 1,
        0xB3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE8141120314088F5013875AC656398D8A2ED19D2A85C8EDD3EC2AEF,
        48,
    ),
    "P-521": (
        2**521 - 1,
        0x0051953EB9618E1C9A1F929A21A0B68540EEA2DA725B99B315F3B8B489918EF109E156193951EC7E937B1652C0BD3BB1BF073573DF883D2C34F1EF451FD46B503F00,
        66,
    ),
}
_OKP_SIZES = {"Ed25519": (32, 64), "Ed448": (57, 114)}  # (public key bytes, signature bytes)
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth")
_REGISTERED_HEADERS = frozenset(
    {"alg", "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "typ", "cty", "crit", "enc", "zip", "epk"}
)
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class InvalidToken(EdgeKvError):
    """The bearer token is refused. 401; ``error`` is the RFC 6750 §3.1 error code.

    ``reason`` says which check failed: ``malformed``, ``too_large``, ``algorithm``,
    ``header``, ``key``, ``signature``, ``expired``, ``not_yet_valid``, ``issued_in_future``,
    ``too_old``, ``issuer``, ``audience``, ``missing_claim``, ``claim``, ``type``.
    """

    status = 401
    code = "invalid_token"
    error: ClassVar[str] = "invalid_token"

    def __init__(self, detail: str = "", reason: str = "invalid") -> None:
        super().__init__(detail)
        self.reason = reason

    def www_authenticate(self, realm: str | None = None) -> str:
        """``Bearer realm="...", error="invalid_token", error_description="..."``
        (RFC 6750 §3; the description is limited to the characters it allows)."""
        desc = "".join(c for c in self.detail if c in _DESC_CHARS)[:200]
        parts = []
        if realm is not None:
            parts.append(f'realm="{"".join(c for c in realm if c in _DESC_CHARS)}"')
        parts.append(f'error="{self.error}"')
        if desc:
            parts.append(f'error_description="{desc}"')
        return "Bearer " + ", ".join(parts)


_DESC_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F) if chr(c) not in '"\\')


def _bad(reason: str, detail: str) -> InvalidToken:
    return InvalidToken(detail, reason)


# --------------------------------------------------------------------------------------
# base64url and JSON, strictly
# --------------------------------------------------------------------------------------


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2): only ``A-Z a-z 0-9 - _``, no
    ``=``, no impossible length, and canonical (unused trailing bits zero), so each byte
    string has exactly one encoding. Raises ``ValueError``."""
    if not isinstance(text, str) or not _B64URL_RE.fullmatch(text):
        raise ValueError("not unpadded base64url")
    if len(text) % 4 == 1:
        raise ValueError("impossible base64url length")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if b64url_encode(data) != text:
        raise ValueError("non-canonical base64url (trailing bits set)")
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate member {k!r}")
        out[k] = v
    return out


def _json_depth_ok(text: str, limit: int) -> bool:
    depth = 0
    in_str = False
    escape = False
    for c in text:
        if in_str:
            if escape:
                escape = False
            elif c == "\\":
                escape = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "[{":
            depth += 1
            if depth > limit:
                return False
        elif c in "]}":
            depth -= 1
    return True


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("malformed", f"{what} is not UTF-8") from None
    if not _json_depth_ok(text, MAX_JSON_DEPTH):
        raise _bad("malformed", f"{what} nests deeper than {MAX_JSON_DEPTH}")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise _bad("malformed", f"{what} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise _bad("malformed", f"{what} must be a JSON object")
    return value


# --------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------


def _member_b64(obj: Mapping[str, Any], name: str, where: str) -> bytes:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{where}.{name} must be a non-empty base64url string")
    try:
        return b64url_decode(value)
    except ValueError as exc:
        raise InvalidInput(f"{where}.{name}: {exc}") from None


def _uint(data: bytes) -> int:
    return int.from_bytes(data, "big")


@dataclass(frozen=True)
class Jwk:
    """One verification key, bound to exactly one algorithm.

    ``members`` are the public JWK members (what WebCrypto's ``importKey("jwk", ...)``
    or ``cryptography`` needs: ``n``/``e``, ``crv``/``x``/``y``); an ``oct`` key's secret
    is in :attr:`secret` and never in ``repr``.
    """

    kty: str
    alg: str
    kid: str | None = None
    use: str | None = None
    key_ops: tuple[str, ...] | None = None
    members: Mapping[str, str] = field(default_factory=dict)
    secret: bytes = field(default=b"", repr=False)

    @classmethod
    def hmac(cls, secret: bytes, alg: str = "HS256", *, kid: str | None = None) -> Jwk:
        """An HMAC key from raw bytes (at least the hash length, RFC 7518 §3.2)."""
        return parse_jwk(
            {"kty": "oct", "k": b64url_encode(bytes(secret)), "alg": alg, **({"kid": kid} if kid else {})}
        )

    @property
    def is_symmetric(self) -> bool:
        return self.kty == "oct"

    @property
    def crv(self) -> str | None:
        return self.members.get("crv")

    @property
    def rsa_bits(self) -> int | None:
        if self.kty != "RSA":
            return None
        return _uint(b64url_decode(self.members["n"])).bit_length()

    def rsa_numbers(self) -> tuple[int, int]:
        """``(n, e)`` of an RSA key."""
        if self.kty != "RSA":
            raise InvalidInput("not an RSA key")
        return _uint(b64url_decode(self.members["n"])), _uint(b64url_decode(self.members["e"]))

    def ec_point(self) -> tuple[int, int]:
        """``(x, y)`` of an EC key."""
        if self.kty != "EC":
            raise InvalidInput("not an EC key")
        return _uint(b64url_decode(self.members["x"])), _uint(b64url_decode(self.members["y"]))

    def okp_public(self) -> bytes:
        if self.kty != "OKP":
            raise InvalidInput("not an OKP key")
        return b64url_decode(self.members["x"])

    def to_jwk(self) -> dict[str, Any]:
        """The JWK as a dict (including ``k`` for an ``oct`` key)."""
        out: dict[str, Any] = {"kty": self.kty, "alg": self.alg, **self.members}
        if self.kid is not None:
            out["kid"] = self.kid
        if self.kty == "oct":
            out["k"] = b64url_encode(self.secret)
        return out

    def signature_length(self) -> int | None:
        """The exact signature length this key can produce (``None``: HMAC, checked by
        comparison)."""
        if self.kty == "RSA":
            bits = self.rsa_bits or 0
            return (bits + 7) // 8
        if self.kty == "EC":
            return 2 * _CURVES[self.members["crv"]][2]
        if self.kty == "OKP":
            return _OKP_SIZES[self.members["crv"]][1]
        return None


def parse_jwk(
    obj: Mapping[str, Any] | str,
    *,
    alg: str | None = None,
    min_rsa_bits: int = MIN_RSA_BITS,
    where: str = "jwk",
) -> Jwk:
    """Validate one JWK for *verifying* signatures and bind it to one algorithm.

    ``alg`` comes from the JWK, else from the ``alg`` argument, else from the curve when
    that leaves one choice (``P-256`` → ``ES256``, ``Ed25519`` → ``EdDSA``); an RSA or oct
    key without either is refused. ``kty``/``alg``/``crv``/``use``/``key_ops`` must agree
    (``use`` ``sig``; ``key_ops`` containing ``verify`` and only signature operations).
    Private members of asymmetric keys are refused (a JWKS must hold public keys only);
    RSA moduli below ``min_rsa_bits`` (never below 2048) and EC points not on their
    curve are refused. Raises :class:`InvalidInput` naming the member.
    """
    if isinstance(obj, str):
        try:
            obj = json.loads(obj, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
        except ValueError as exc:
            raise InvalidInput(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(obj, Mapping):
        raise InvalidInput(f"{where} must be a JSON object")
    if isinstance(min_rsa_bits, bool) or not isinstance(min_rsa_bits, int) or min_rsa_bits < MIN_RSA_BITS:
        raise InvalidInput(f"min_rsa_bits must be an integer >= {MIN_RSA_BITS}")
    kty = obj.get("kty")
    if kty not in ("oct", "RSA", "EC", "OKP"):
        raise InvalidInput(f"{where}.kty must be one of oct, RSA, EC, OKP; got {kty!r}")
    kid = obj.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise InvalidInput(f"{where}.kid must be a non-empty string")
    use = obj.get("use")
    if use is not None and use != "sig":
        raise InvalidInput(f"{where}.use is {use!r}: only signature keys (use 'sig') verify tokens")
    ops_raw = obj.get("key_ops")
    key_ops: tuple[str, ...] | None = None
    if ops_raw is not None:
        if not isinstance(ops_raw, list) or not all(isinstance(o, str) for o in ops_raw):
            raise InvalidInput(f"{where}.key_ops must be a list of strings")
        if len(set(ops_raw)) != len(ops_raw):
            raise InvalidInput(f"{where}.key_ops repeats a value")
        if "verify" not in ops_raw:
            raise InvalidInput(f"{where}.key_ops does not allow 'verify'")
        if set(ops_raw) - {"sign", "verify"}:
            raise InvalidInput(f"{where}.key_ops mixes signature and other operations: {ops_raw}")
        key_ops = tuple(ops_raw)

    jwk_alg = obj.get("alg")
    if jwk_alg is not None and not isinstance(jwk_alg, str):
        raise InvalidInput(f"{where}.alg must be a string")
    if jwk_alg is not None and alg is not None and jwk_alg != alg:
        raise InvalidInput(f"{where}.alg is {jwk_alg!r} but {alg!r} was configured for it")
    chosen = jwk_alg or alg
    crv = obj.get("crv")
    if chosen is None:
        if kty == "EC" and isinstance(crv, str):
            chosen = {v: k for k, v in _EC_ALGS.items()}.get(crv)
        elif kty == "OKP" and crv in ("Ed25519", "Ed448"):
            chosen = "EdDSA"
        if chosen is None:
            raise InvalidInput(f"{where}: no alg in the JWK and none configured (kty {kty} needs one)")
    if isinstance(chosen, str) and chosen.lower() == "none":
        raise InvalidInput(f"{where}.alg 'none' is never accepted")
    if chosen not in _KTY_FOR:
        raise InvalidInput(f"{where}.alg {chosen!r} is not supported")
    if _KTY_FOR[chosen] != kty:
        raise InvalidInput(f"{where}: alg {chosen} needs kty {_KTY_FOR[chosen]}, not {kty}")

    members: dict[str, str] = {}
    secret = b""
    if kty == "oct":
        secret = _member_b64(obj, "k", where)
        if len(secret) < _HMAC_MIN_KEY[chosen]:
            raise InvalidInput(
                f"{where}.k is {len(secret)} bytes; {chosen} needs at least {_HMAC_MIN_KEY[chosen]} (RFC 7518 §3.2)"
            )
    else:
        present = [m for m in _PRIVATE_MEMBERS if m in obj]
        if present:
            raise InvalidInput(f"{where} holds private key members {present}: publish public keys only")
    if kty == "RSA":
        n = _uint(_member_b64(obj, "n", where))
        e = _uint(_member_b64(obj, "e", where))
        if n.bit_length() < min_rsa_bits:
            raise InvalidInput(
                f"{where}.n is a {n.bit_length()}-bit modulus; at least {min_rsa_bits} bits required"
            )
        if e < 3 or e % 2 == 0 or e >= n:
            raise InvalidInput(f"{where}.e is not a usable RSA public exponent")
        members = {"n": b64url_encode(n.to_bytes((n.bit_length() + 7) // 8, "big")), "e": obj["e"]}
    elif kty == "EC":
        if crv not in _CURVES:
            raise InvalidInput(f"{where}.crv must be P-256, P-384 or P-521; got {crv!r}")
        if _EC_ALGS[chosen] != crv:
            raise InvalidInput(f"{where}: alg {chosen} needs crv {_EC_ALGS[chosen]}, not {crv}")
        p, b, size = _CURVES[crv]
        xb, yb = _member_b64(obj, "x", where), _member_b64(obj, "y", where)
        if len(xb) != size or len(yb) != size:
            raise InvalidInput(f"{where}.x/.y must be {size} bytes each for {crv}")
        x, y = _uint(xb), _uint(yb)
        if x >= p or y >= p or (y * y - (x * x * x - 3 * x + b)) % p != 0:
            raise InvalidInput(f"{where}: the point (x, y) is not on {crv}")
        members = {"crv": crv, "x": obj["x"], "y": obj["y"]}
    elif kty == "OKP":
        allowed = _OKP_ALGS[chosen]
        if crv not in allowed:
            raise InvalidInput(f"{where}.crv must be {' or '.join(allowed)} for {chosen}; got {crv!r}")
        xb = _member_b64(obj, "x", where)
        if len(xb) != _OKP_SIZES[crv][0]:
            raise InvalidInput(f"{where}.x must be {_OKP_SIZES[crv][0]} bytes for {crv}")
        members = {"crv": crv, "x": obj["x"]}
    return Jwk(kty=kty, alg=chosen, kid=kid, use=use, key_ops=key_ops, members=members, secret=secret)


@dataclass(frozen=True)
class JwkSet:
    """Usable keys of a JWKS, and the ones skipped with why (RFC 7517 §5: members a
    verifier cannot use are ignored, e.g. encryption keys or unknown ``kty``)."""

    keys: tuple[Jwk, ...]
    skipped: tuple[tuple[int, str], ...] = ()

    def __iter__(self) -> Any:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def by_kid(self, kid: str) -> list[Jwk]:
        return [k for k in self.keys if k.kid == kid]


def parse_jwks(
    obj: Mapping[str, Any] | str, *, default_alg: str | None = None, min_rsa_bits: int = MIN_RSA_BITS
) -> JwkSet:
    """Parse a JWK Set ``{"keys": [...]}``. Keys that cannot verify signatures are skipped
    (listed in ``skipped``); a set with no usable key is :class:`InvalidInput`."""
    if isinstance(obj, str):
        try:
            obj = json.loads(obj, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
        except ValueError as exc:
            raise InvalidInput(f"jwks: not valid JSON ({exc})") from None
    if not isinstance(obj, Mapping) or not isinstance(obj.get("keys"), list):
        raise InvalidInput('jwks must be an object with a "keys" array')
    keys: list[Jwk] = []
    skipped: list[tuple[int, str]] = []
    for i, entry in enumerate(obj["keys"]):
        try:
            keys.append(parse_jwk(entry, alg=default_alg, min_rsa_bits=min_rsa_bits, where=f"keys[{i}]"))
        except InvalidInput as exc:
            skipped.append((i, str(exc)))
    if not keys:
        reasons = "; ".join(r for _, r in skipped) or "it is empty"
        raise InvalidInput(f"jwks holds no usable verification key: {reasons}")
    seen: set[tuple[str | None, str]] = set()
    for k in keys:
        if k.kid is not None and (k.kid, k.alg) in seen:
            raise InvalidInput(f"jwks has two {k.alg} keys with kid {k.kid!r}")
        seen.add((k.kid, k.alg))
    return JwkSet(tuple(keys), tuple(skipped))


# --------------------------------------------------------------------------------------
# Parsing the compact serialisation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedJws:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def parse_compact(token: str | bytes, *, max_bytes: int = MAX_TOKEN_BYTES) -> ParsedJws:
    """Split and decode a compact JWS carrying a JWT: exactly three base64url segments,
    header and payload JSON objects. Verifies nothing."""
    if isinstance(token, (bytes, bytearray)):
        try:
            token = bytes(token).decode("ascii")
        except UnicodeDecodeError:
            raise _bad("malformed", "token is not ASCII") from None
    if not isinstance(token, str):
        raise _bad("malformed", f"token must be a string, got {type(token).__name__}")
    if len(token) > max_bytes:
        raise _bad("too_large", f"token is {len(token)} bytes; the limit is {max_bytes}")
    if not token.isascii():
        raise _bad("malformed", "token is not ASCII")
    parts = token.split(".")
    if len(parts) != 3:
        what = " (a JWE?)" if len(parts) == 5 else ""
        raise _bad("malformed", f"a JWS has 3 dot-separated segments, this has {len(parts)}{what}")
    try:
        header_b, payload_b, signature = (b64url_decode(p) for p in parts)
    except ValueError as exc:
        raise _bad("malformed", f"segment is not strict base64url: {exc}") from None
    if not signature:
        raise _bad("malformed", "the signature segment is empty (unsecured JWS)")
    header = _json_object(header_b, "header")
    claims = _json_object(payload_b, "claims")
    return ParsedJws(header, claims, (parts[0] + "." + parts[1]).encode("ascii"), signature)


def peek_header(token: str | bytes, *, max_bytes: int = MAX_TOKEN_BYTES) -> dict[str, Any]:
    """The *unverified* header (to pick a JWKS by ``kid`` before verifying). Never trust it."""
    return parse_compact(token, max_bytes=max_bytes).header


# --------------------------------------------------------------------------------------
# Policy and verification
# --------------------------------------------------------------------------------------


class Verifier(Protocol):
    """Verifies an asymmetric JWS signature. May be sync or async (return a bool or an
    awaitable of one); async verifiers need :func:`verify_jwt_async`."""

    def verify(
        self, alg: str, key: Jwk, signing_input: bytes, signature: bytes
    ) -> bool | Awaitable[bool]: ...


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    if name not in claims:
        return None
    v = claims[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _bad("claim", f"{name} must be a NumericDate (a number of seconds)")
    return float(v)


@dataclass(frozen=True)
class JwtPolicy:
    """What a token must satisfy besides its signature.

    ``issuer``: required exact ``iss``. ``audience``: acceptable ``aud`` values (the token's
    ``aud``, a string or a list, must name one); when ``None``, a token that carries an
    ``aud`` is refused (RFC 7519 §4.1.3). ``leeway_s`` applies to ``exp``/``nbf``/``iat``.
    ``max_age_s`` refuses tokens issued (``iat``) longer ago. ``typ`` requires that header
    type (RFC 8725 §3.11; ``application/`` prefix and case ignored). ``algorithms`` narrows
    which key algorithms may be used. ``understood_crit`` lists ``crit`` extensions the
    caller processes itself (default none: any ``crit`` is refused).
    """

    issuer: str | None = None
    audience: str | frozenset[str] | None = None
    leeway_s: int = 30
    required_claims: tuple[str, ...] = ("exp",)
    max_age_s: int | None = None
    typ: str | None = None
    algorithms: frozenset[str] | None = None
    understood_crit: frozenset[str] = frozenset()
    max_token_bytes: int = MAX_TOKEN_BYTES

    def __post_init__(self) -> None:
        if (
            isinstance(self.leeway_s, bool)
            or not isinstance(self.leeway_s, int)
            or not 0 <= self.leeway_s <= 3600
        ):
            raise InvalidInput("leeway_s must be an integer number of seconds in [0, 3600]")
        if self.max_age_s is not None and (
            isinstance(self.max_age_s, bool) or not isinstance(self.max_age_s, int) or self.max_age_s <= 0
        ):
            raise InvalidInput("max_age_s must be a positive integer or None")
        if (
            isinstance(self.max_token_bytes, bool)
            or not isinstance(self.max_token_bytes, int)
            or not 64 <= self.max_token_bytes <= 1 << 20
        ):
            raise InvalidInput("max_token_bytes must be an integer in [64, 1 MiB]")
        if self.issuer is not None and (not isinstance(self.issuer, str) or not self.issuer):
            raise InvalidInput("issuer must be a non-empty string")
        aud = self.audience
        if isinstance(aud, str):
            object.__setattr__(self, "audience", frozenset({aud}))
        elif aud is not None:
            aud = frozenset(aud)
            if not aud or not all(isinstance(a, str) and a for a in aud):
                raise InvalidInput("audience must be a non-empty string or set of strings")
            object.__setattr__(self, "audience", aud)
        if isinstance(self.required_claims, str) or not all(isinstance(c, str) for c in self.required_claims):
            raise InvalidInput("required_claims must be a sequence of claim names")
        object.__setattr__(self, "required_claims", tuple(self.required_claims))
        if self.algorithms is not None:
            algs = frozenset(self.algorithms)
            unknown = algs - set(_KTY_FOR)
            if unknown or not algs:
                raise InvalidInput(f"algorithms must be supported JWS algorithms; unknown: {sorted(unknown)}")
            object.__setattr__(self, "algorithms", algs)
        object.__setattr__(self, "understood_crit", frozenset(self.understood_crit))


@dataclass(frozen=True)
class VerifiedJwt:
    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    key: Jwk

    @property
    def subject(self) -> str | None:
        sub = self.claims.get("sub")
        return sub if isinstance(sub, str) else None

    @property
    def issuer(self) -> str | None:
        iss = self.claims.get("iss")
        return iss if isinstance(iss, str) else None

    @property
    def scopes(self) -> tuple[str, ...]:
        """OAuth scopes: ``scope`` (space-separated, RFC 8693/9068) or ``scp`` (a list)."""
        scope = self.claims.get("scope")
        if isinstance(scope, str):
            return tuple(s for s in scope.split(" ") if s)
        scp = self.claims.get("scp")
        if isinstance(scp, list):
            return tuple(s for s in scp if isinstance(s, str) and s)
        return ()


def _normalise_typ(typ: str) -> str:
    t = typ.lower()
    return t[len("application/") :] if t.startswith("application/") else t


KeysLike = Jwk | JwkSet | Sequence[Jwk]


class JwtValidator:
    """Keys + policy (+ a verifier for asymmetric keys), checked once at construction."""

    def __init__(
        self, keys: KeysLike, policy: JwtPolicy | None = None, *, verifier: Verifier | None = None
    ) -> None:
        if isinstance(keys, Jwk):
            key_list = [keys]
        elif isinstance(keys, JwkSet):
            key_list = list(keys.keys)
        else:
            key_list = list(keys)
        if not key_list or not all(isinstance(k, Jwk) for k in key_list):
            raise InvalidInput("keys must be one or more Jwk (parse them with parse_jwk / parse_jwks)")
        self.policy = policy or JwtPolicy()
        if self.policy.algorithms is not None:
            key_list = [k for k in key_list if k.alg in self.policy.algorithms]
            if not key_list:
                raise InvalidInput("no configured key uses an algorithm the policy allows")
        if verifier is None and any(not k.is_symmetric for k in key_list):
            raise InvalidInput(
                "asymmetric keys need a Verifier (WebCrypto at the edge, cryptography at the origin)"
            )
        if verifier is not None and not callable(getattr(verifier, "verify", None)):
            raise InvalidInput("verifier must have a verify(alg, key, signing_input, signature) method")
        self.keys = tuple(key_list)
        self.verifier = verifier

    # -- steps shared by the sync and async paths ------------------------------------

    def _prepare(self, token: str | bytes) -> tuple[ParsedJws, list[Jwk]]:
        parsed = parse_compact(token, max_bytes=self.policy.max_token_bytes)
        header = parsed.header
        alg = header.get("alg")
        if not isinstance(alg, str) or not alg:
            raise _bad("algorithm", "header alg is missing")
        if alg.strip().lower() == "none":
            raise _bad("algorithm", "alg 'none' is never accepted")
        crit = header.get("crit")
        if crit is not None:
            if not isinstance(crit, list) or not crit or not all(isinstance(c, str) for c in crit):
                raise _bad("header", "crit must be a non-empty list of strings")
            if len(set(crit)) != len(crit):
                raise _bad("header", "crit repeats a name")
            for c in crit:
                if c in _REGISTERED_HEADERS:
                    raise _bad("header", f"crit must not list the registered parameter {c!r}")
                if c not in header:
                    raise _bad("header", f"crit lists {c!r}, which the header does not carry")
                if c not in self.policy.understood_crit:
                    raise _bad("header", f"critical extension {c!r} is not understood")
        if "b64" in header and header["b64"] is not True:
            raise _bad("header", "unencoded payloads (b64: false, RFC 7797) are refused")
        if "zip" in header:
            raise _bad("header", "compressed JWS (zip) is refused")
        if "enc" in header:
            raise _bad("header", "a JWE header (enc) is not a JWS")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _bad("header", "kid must be a string")
        typ = header.get("typ")
        if typ is not None and not isinstance(typ, str):
            raise _bad("header", "typ must be a string")
        if self.policy.typ is not None and (
            typ is None or _normalise_typ(typ) != _normalise_typ(self.policy.typ)
        ):
            raise _bad("type", f"token type must be {self.policy.typ!r}, got {typ!r}")

        same_alg = [k for k in self.keys if k.alg == alg]
        if not same_alg:
            raise _bad("algorithm", f"alg {alg!r} is not accepted for this issuer")
        if kid is not None:
            candidates = [k for k in same_alg if k.kid == kid] or [k for k in same_alg if k.kid is None]
        else:
            candidates = same_alg
        if not candidates:
            raise _bad("key", f"no {alg} key with kid {kid!r}")
        length = candidates[0].signature_length()
        if length is not None:
            candidates = [k for k in candidates if k.signature_length() == len(parsed.signature)]
            if not candidates:
                raise _bad(
                    "signature", f"{alg} signature has the wrong length ({len(parsed.signature)} bytes)"
                )
        return parsed, candidates

    def _hmac_ok(self, key: Jwk, parsed: ParsedJws) -> bool:
        mac = hmac.new(key.secret, parsed.signing_input, HMAC_ALGORITHMS[key.alg]).digest()
        return hmac.compare_digest(mac, parsed.signature)

    def _claims(self, parsed: ParsedJws, key: Jwk, now: float) -> VerifiedJwt:
        if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
            raise InvalidInput("now must be a finite number of seconds since the epoch")
        p = self.policy
        claims = parsed.claims
        leeway = p.leeway_s
        for name in p.required_claims:
            if name not in claims:
                raise _bad("missing_claim", f"claim {name!r} is required")
        exp = _numeric_date(claims, "exp")
        nbf = _numeric_date(claims, "nbf")
        iat = _numeric_date(claims, "iat")
        if exp is not None and now >= exp + leeway:
            raise _bad("expired", "the token has expired")
        if nbf is not None and now < nbf - leeway:
            raise _bad("not_yet_valid", "the token is not valid yet (nbf)")
        if iat is not None and iat > now + leeway:
            raise _bad("issued_in_future", "the token was issued in the future (iat)")
        if p.max_age_s is not None:
            if iat is None:
                raise _bad("missing_claim", "claim 'iat' is required to check the token's age")
            if now - iat > p.max_age_s + leeway:
                raise _bad("too_old", f"the token was issued more than {p.max_age_s} s ago")
        for name in ("iss", "sub", "jti"):
            if name in claims and not isinstance(claims[name], str):
                raise _bad("claim", f"{name} must be a string")
        if p.issuer is not None and claims.get("iss") != p.issuer:
            raise _bad("issuer", "the token's issuer is not accepted")
        if "aud" in claims:
            aud = claims["aud"]
            values = [aud] if isinstance(aud, str) else aud
            if not isinstance(values, list) or not values or not all(isinstance(a, str) for a in values):
                raise _bad("claim", "aud must be a string or a non-empty list of strings")
            if p.audience is None:
                raise _bad("audience", "the token names an audience and none is configured to accept")
            assert isinstance(p.audience, frozenset)
            if not p.audience.intersection(values):
                raise _bad("audience", "the token is not meant for this audience")
        elif p.audience is not None:
            raise _bad("audience", "the token names no audience (aud)")
        return VerifiedJwt(parsed.header, claims, key)

    # -- public ---------------------------------------------------------------------

    def verify(self, token: str | bytes, *, now: float) -> VerifiedJwt:
        parsed, candidates = self._prepare(token)
        for key in candidates:
            if key.is_symmetric:
                ok = self._hmac_ok(key, parsed)
            else:
                assert self.verifier is not None
                result = self.verifier.verify(key.alg, key, parsed.signing_input, parsed.signature)
                if inspect.isawaitable(result):
                    if inspect.iscoroutine(result):
                        result.close()
                    raise InvalidInput("this verifier is asynchronous: use verify_async / verify_jwt_async")
                ok = result is True
            if ok:
                return self._claims(parsed, key, now)
        raise _bad("signature", "the signature does not verify")

    async def verify_async(self, token: str | bytes, *, now: float) -> VerifiedJwt:
        parsed, candidates = self._prepare(token)
        for key in candidates:
            if key.is_symmetric:
                ok = self._hmac_ok(key, parsed)
            else:
                assert self.verifier is not None
                result = self.verifier.verify(key.alg, key, parsed.signing_input, parsed.signature)
                if inspect.isawaitable(result):
                    result = await result
                ok = result is True
            if ok:
                return self._claims(parsed, key, now)
        raise _bad("signature", "the signature does not verify")


def verify_jwt(
    token: str | bytes,
    keys: KeysLike,
    *,
    now: float,
    policy: JwtPolicy | None = None,
    verifier: Verifier | None = None,
) -> VerifiedJwt:
    """Verify ``token`` against ``keys`` (see :class:`JwtValidator`)."""
    return JwtValidator(keys, policy, verifier=verifier).verify(token, now=now)


async def verify_jwt_async(
    token: str | bytes,
    keys: KeysLike,
    *,
    now: float,
    policy: JwtPolicy | None = None,
    verifier: Verifier | None = None,
) -> VerifiedJwt:
    """:func:`verify_jwt` for verifiers that return awaitables (WebCrypto)."""
    return await JwtValidator(keys, policy, verifier=verifier).verify_async(token, now=now)


def encode_hs(claims: Mapping[str, Any], key: Jwk, *, headers: Mapping[str, Any] | None = None) -> str:
    """Mint an HMAC-signed JWT with ``key`` (its ``alg``; its ``kid`` when it has one)."""
    if not isinstance(key, Jwk) or not key.is_symmetric:
        raise InvalidInput("encode_hs needs an oct (HMAC) Jwk")
    header: dict[str, Any] = {"alg": key.alg, "typ": "JWT"}
    if key.kid is not None:
        header["kid"] = key.kid
    for k, v in (headers or {}).items():
        if k == "alg" and v != key.alg:
            raise InvalidInput("the key fixes alg; it cannot be overridden")
        header[k] = v
    try:
        h = b64url_encode(json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8"))
        p = b64url_encode(json.dumps(dict(claims), separators=(",", ":"), allow_nan=False).encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"claims/header must be JSON-serialisable: {exc}") from None
    signing_input = f"{h}.{p}".encode("ascii")
    sig = hmac.new(key.secret, signing_input, HMAC_ALGORITHMS[key.alg]).digest()
    return f"{h}.{p}.{b64url_encode(sig)}"


def keys_from(items: Iterable[Mapping[str, Any]], *, alg: str | None = None) -> list[Jwk]:
    """Parse several JWKs strictly (each must be usable)."""
    return [parse_jwk(obj, alg=alg, where=f"keys[{i}]") for i, obj in enumerate(items)]
