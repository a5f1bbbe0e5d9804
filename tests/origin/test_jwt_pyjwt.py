"""edge_kv.core.jwt against an independent implementation: tokens minted by PyJWT verify
with our core (HS* with hmac; RS*/PS*/ES*/EdDSA through a Verifier built on the
``cryptography`` package, with keys exported as JWKs by PyJWT), tokens we mint verify with
PyJWT, verdicts on time and audience claims agree, and the algorithm-confusion and
``alg: none`` attacks fail."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from edge_kv.core.jwt import (
    InvalidToken,
    Jwk,
    JwtPolicy,
    b64url_decode,
    b64url_encode,
    encode_hs,
    parse_jwk,
    parse_jwks,
    verify_jwt,
)

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_CURVES: dict[str, Callable[[], ec.EllipticCurve]] = {
    "P-256": ec.SECP256R1,
    "P-384": ec.SECP384R1,
    "P-521": ec.SECP521R1,
}


class CryptographyVerifier:
    """The ``Verifier`` a CPython service plugs in: our Jwk → a ``cryptography`` key."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def verify(self, alg: str, key: Jwk, signing_input: bytes, signature: bytes) -> bool:
        self.seen.append((alg, len(signature)))
        try:
            if alg.startswith(("RS", "PS")):
                n, e = key.rsa_numbers()
                pub = rsa.RSAPublicNumbers(e, n).public_key()
                h = _HASHES[alg[2:]]()
                pad: padding.AsymmetricPadding = (
                    padding.PKCS1v15()
                    if alg.startswith("RS")
                    else padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)  # RFC 7518 §3.5
                )
                pub.verify(signature, signing_input, pad, h)
            elif alg.startswith("ES"):
                x, y = key.ec_point()
                ec_pub = ec.EllipticCurvePublicNumbers(x, y, _CURVES[key.crv or ""]()).public_key()
                half = len(signature) // 2
                der = encode_dss_signature(
                    int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
                )
                ec_pub.verify(der, signing_input, ec.ECDSA(_HASHES[alg[2:]]()))
            elif alg in ("EdDSA", "Ed25519", "Ed448"):
                raw = key.okp_public()
                if key.crv == "Ed25519":
                    ed25519.Ed25519PublicKey.from_public_bytes(raw).verify(signature, signing_input)
                else:
                    ed448.Ed448PublicKey.from_public_bytes(raw).verify(signature, signing_input)
            else:
                return False
        except InvalidSignature:
            return False
        return True


VERIFIER = CryptographyVerifier()
NOW = int(time.time())
CLAIMS = {
    "iss": "https://idp.example",
    "sub": "user-42",
    "aud": "edge-api",
    "iat": NOW - 5,
    "nbf": NOW - 5,
    # A day, not minutes: PyJWT checks it against the real clock, and on a loaded machine the
    # suite can run long after this module was imported.
    "exp": NOW + 86400,
    "scope": "orders:read orders:write",
}
POLICY = JwtPolicy(issuer="https://idp.example", audience="edge-api", required_claims=("exp", "iat", "sub"))
SECRET = bytes(range(64))


# --- HS*: PyJWT mints, we verify; we mint, PyJWT verifies ----------------------------------


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_pyjwt_hs_tokens_verify_with_ours(alg: str) -> None:
    token = pyjwt.encode(CLAIMS, SECRET, algorithm=alg, headers={"kid": "hs-1"})
    v = verify_jwt(token, Jwk.hmac(SECRET, alg, kid="hs-1"), now=NOW, policy=POLICY)
    assert v.subject == "user-42" and v.scopes == ("orders:read", "orders:write")
    assert v.header["alg"] == alg and v.header["kid"] == "hs-1"


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_our_hs_tokens_verify_with_pyjwt(alg: str) -> None:
    token = encode_hs(CLAIMS, Jwk.hmac(SECRET, alg, kid="hs-1"))
    decoded = pyjwt.decode(token, SECRET, algorithms=[alg], audience="edge-api", issuer="https://idp.example")
    assert decoded == CLAIMS
    assert pyjwt.get_unverified_header(token) == {"alg": alg, "typ": "JWT", "kid": "hs-1"}


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_pyjwt_hs_token_with_another_secret_is_refused(alg: str) -> None:
    token = pyjwt.encode(CLAIMS, b"\x01" * 64, algorithm=alg)
    with pytest.raises(InvalidToken) as info:
        verify_jwt(token, Jwk.hmac(SECRET, alg), now=NOW, policy=POLICY)
    assert info.value.reason == "signature"


# --- asymmetric: PyJWT mints and exports the JWK, cryptography verifies through our core --


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


KEYS: dict[str, Any] = {}


def _key(kind: str) -> Any:
    if kind not in KEYS:
        KEYS[kind] = {
            "rsa": _rsa,
            "P-256": lambda: ec.generate_private_key(ec.SECP256R1()),
            "P-384": lambda: ec.generate_private_key(ec.SECP384R1()),
            "P-521": lambda: ec.generate_private_key(ec.SECP521R1()),
            "ed25519": ed25519.Ed25519PrivateKey.generate,
            "ed448": ed448.Ed448PrivateKey.generate,
        }[kind]()
    return KEYS[kind]


def _public_jwk(kind: str, private: Any) -> dict[str, Any]:
    exporter: Any = {"rsa": RSAAlgorithm, "ed25519": OKPAlgorithm, "ed448": OKPAlgorithm}.get(
        kind, ECAlgorithm
    )
    out: dict[str, Any] = exporter.to_jwk(private.public_key(), as_dict=True)
    return out


ASYMMETRIC = [
    ("RS256", "rsa", 256),
    ("RS384", "rsa", 256),
    ("RS512", "rsa", 256),
    ("PS256", "rsa", 256),
    ("PS384", "rsa", 256),
    ("PS512", "rsa", 256),
    ("ES256", "P-256", 64),
    ("ES384", "P-384", 96),
    ("ES512", "P-521", 132),
    ("EdDSA", "ed25519", 64),
    ("EdDSA", "ed448", 114),
]


@pytest.mark.parametrize(("alg", "kind", "sig_len"), ASYMMETRIC)
def test_pyjwt_asymmetric_tokens_verify_with_ours(alg: str, kind: str, sig_len: int) -> None:
    private = _key(kind)
    token = pyjwt.encode(CLAIMS, private, algorithm=alg, headers={"kid": f"{kind}-1"})
    jwk = parse_jwk({**_public_jwk(kind, private), "kid": f"{kind}-1"}, alg=alg)
    verifier = CryptographyVerifier()
    v = verify_jwt(token, jwk, now=NOW, policy=POLICY, verifier=verifier)
    assert v.subject == "user-42"
    assert verifier.seen == [(alg, sig_len)]  # ES*: raw r || s of 2 x coordinate size


@pytest.mark.parametrize(("alg", "kind", "sig_len"), ASYMMETRIC)
def test_tampered_asymmetric_tokens_are_refused(alg: str, kind: str, sig_len: int) -> None:
    private = _key(kind)
    token = pyjwt.encode(CLAIMS, private, algorithm=alg)
    jwk = parse_jwk(_public_jwk(kind, private), alg=alg)
    head, payload, sig = token.split(".")
    forged_claims = b64url_encode(json.dumps({**CLAIMS, "sub": "admin"}).encode())
    for forged in (
        f"{head}.{forged_claims}.{sig}",
        f"{head}.{payload}.{b64url_encode(b64url_decode(sig)[::-1])}",
    ):
        with pytest.raises(InvalidToken) as info:
            verify_jwt(forged, jwk, now=NOW, policy=POLICY, verifier=VERIFIER)
        assert info.value.reason == "signature"


def test_a_token_from_another_key_of_the_same_kind_is_refused() -> None:
    token = pyjwt.encode(CLAIMS, _rsa(), algorithm="RS256")
    jwk = parse_jwk(_public_jwk("rsa", _key("rsa")), alg="RS256")
    with pytest.raises(InvalidToken) as info:
        verify_jwt(token, jwk, now=NOW, policy=POLICY, verifier=VERIFIER)
    assert info.value.reason == "signature"


def test_der_encoded_ecdsa_signature_is_refused_before_the_verifier() -> None:
    private = _key("P-256")
    head, payload, _ = pyjwt.encode(CLAIMS, private, algorithm="ES256").split(".")
    der = private.sign(f"{head}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    verifier = CryptographyVerifier()
    with pytest.raises(InvalidToken) as info:
        verify_jwt(
            f"{head}.{payload}.{b64url_encode(der)}",
            parse_jwk(_public_jwk("P-256", private)),
            now=NOW,
            policy=POLICY,
            verifier=verifier,
        )
    assert info.value.reason == "signature" and verifier.seen == []


def test_jwks_from_pyjwt_keys_selects_by_kid() -> None:
    jwks = {
        "keys": [
            {**_public_jwk("rsa", _key("rsa")), "kid": "r1", "alg": "RS256", "use": "sig"},
            {**_public_jwk("P-256", _key("P-256")), "kid": "e1"},
            {**_public_jwk("ed25519", _key("ed25519")), "kid": "o1"},
        ]
    }
    ks = parse_jwks(json.dumps(jwks))
    for alg, kind, kid in (("RS256", "rsa", "r1"), ("ES256", "P-256", "e1"), ("EdDSA", "ed25519", "o1")):
        token = pyjwt.encode(CLAIMS, _key(kind), algorithm=alg, headers={"kid": kid})
        assert verify_jwt(token, ks, now=NOW, policy=POLICY, verifier=VERIFIER).key.kid == kid
    # a kid pointing at a key of another algorithm does not let the token pick it
    token = pyjwt.encode(CLAIMS, _key("P-256"), algorithm="ES256", headers={"kid": "r1"})
    with pytest.raises(InvalidToken):
        verify_jwt(token, ks, now=NOW, policy=POLICY, verifier=VERIFIER)


def test_pyjwt_jwk_of_a_1024_bit_rsa_key_is_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="2048"):
        parse_jwk(RSAAlgorithm.to_jwk(weak.public_key(), as_dict=True), alg="RS256")


def test_pyjwt_private_jwk_is_refused_as_a_verification_key() -> None:
    private_jwk = RSAAlgorithm.to_jwk(_key("rsa"), as_dict=True)
    with pytest.raises(ValueError, match="key_ops"):  # PyJWT marks it key_ops ["sign"]
        parse_jwk(private_jwk, alg="RS256")
    del private_jwk["key_ops"]
    with pytest.raises(ValueError, match="private"):
        parse_jwk(private_jwk, alg="RS256")


# --- algorithm confusion and alg none -------------------------------------------------------


def _rsa_public_pem() -> bytes:
    pem: bytes = (
        _key("rsa")
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return pem


def _hs_with_secret(secret: bytes, alg: str = "HS256") -> str:
    h = b64url_encode(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    p = b64url_encode(json.dumps(CLAIMS).encode())
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    return f"{h}.{p}.{b64url_encode(hmac.new(secret, f'{h}.{p}'.encode(), digest).digest())}"


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_with_the_rsa_public_key_as_secret_is_refused(alg: str) -> None:
    """CVE-2015-9235 / CVE-2022-29217: sign HS* with the verifier's public key."""
    rsa_jwk = parse_jwk(_public_jwk("rsa", _key("rsa")), alg="RS256")
    for secret in (
        _rsa_public_pem(),
        json.dumps(rsa_jwk.to_jwk()).encode(),
        b64url_decode(rsa_jwk.members["n"]),
    ):
        with pytest.raises(InvalidToken) as info:
            verify_jwt(_hs_with_secret(secret, alg), rsa_jwk, now=NOW, policy=POLICY, verifier=VERIFIER)
        assert info.value.reason == "algorithm"
    # PyJWT itself refuses to produce such a token, for the same reason
    with pytest.raises(pyjwt.exceptions.InvalidKeyError):
        pyjwt.encode(CLAIMS, _rsa_public_pem(), algorithm="HS256")


def test_es_token_for_an_eddsa_issuer_is_refused() -> None:
    ed_jwk = parse_jwk(_public_jwk("ed25519", _key("ed25519")))
    token = pyjwt.encode(CLAIMS, _key("P-256"), algorithm="ES256")
    with pytest.raises(InvalidToken) as info:
        verify_jwt(token, ed_jwk, now=NOW, policy=POLICY, verifier=VERIFIER)
    assert info.value.reason == "algorithm"


def test_pyjwt_alg_none_token_is_refused() -> None:
    token = pyjwt.encode(CLAIMS, None, algorithm="none")  # type: ignore[arg-type]
    for keys in (Jwk.hmac(SECRET), parse_jwk(_public_jwk("rsa", _key("rsa")), alg="RS256")):
        with pytest.raises(InvalidToken) as info:
            verify_jwt(token, keys, now=NOW, policy=POLICY, verifier=VERIFIER)
        assert info.value.reason == "malformed"  # empty signature segment
    # with a (meaningless) signature appended, the alg itself is refused
    with pytest.raises(InvalidToken) as info:
        verify_jwt(token + "AAAA", Jwk.hmac(SECRET), now=NOW, policy=POLICY)
    assert info.value.reason == "algorithm"


# --- verdicts agree with PyJWT's on the registered claims ---------------------------------

# Offsets from now, kept away from the boundaries so the two clocks (PyJWT reads time.time())
# cannot disagree.
_OFFSET = st.sampled_from([-7200, -600, -120, -45, 45, 120, 600, 7200])


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    exp=st.none() | _OFFSET,
    nbf=st.none() | _OFFSET,
    iat=st.none() | _OFFSET,
    leeway=st.sampled_from([0, 30, 60]),
    token_aud=st.none() | st.sampled_from(["edge-api", "other"]) | st.just(["other", "edge-api"]),
    expected_aud=st.none() | st.sampled_from(["edge-api", "other"]),
)
def test_claim_verdicts_agree_with_pyjwt(
    exp: int | None,
    nbf: int | None,
    iat: int | None,
    leeway: int,
    token_aud: str | list[str] | None,
    expected_aud: str | None,
) -> None:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": "u"}
    for name, offset in (("exp", exp), ("nbf", nbf), ("iat", iat)):
        if offset is not None:
            claims[name] = now + offset
    if token_aud is not None:
        claims["aud"] = token_aud
    token = pyjwt.encode(claims, SECRET, algorithm="HS256")
    try:
        pyjwt.decode(
            token,
            SECRET,
            algorithms=["HS256"],
            audience=expected_aud,
            leeway=leeway,
            options={"require": []},
        )
        theirs = True
    except pyjwt.exceptions.InvalidTokenError:
        theirs = False
    policy = JwtPolicy(leeway_s=leeway, audience=expected_aud, required_claims=())
    try:
        verify_jwt(token, Jwk.hmac(SECRET), now=now, policy=policy)
        ours = True
    except InvalidToken:
        ours = False
    assert ours == theirs, claims
