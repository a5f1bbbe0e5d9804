"""JWT core: RFC 7515 appendix A vectors, header policy (RFC 8725), claims, JWK model,
malformed tokens. Edge-safe: stdlib + pytest + hypothesis only, re-run inside Pyodide.

The asymmetric vectors (RS256, ES256, ES512) are checked through the core with a small
pure-Python verifier below (textbook RSA PKCS#1 v1.5 and ECDSA), which proves that the
core hands a verifier the right signing input, key and raw ``r || s`` signature.
tests/origin/test_jwt_pyjwt.py does the same with PyJWT and ``cryptography``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Awaitable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_kv.core.errors import EdgeKvError, InvalidInput, error_from_code
from edge_kv.core.jwt import (
    InvalidToken,
    Jwk,
    JwtPolicy,
    JwtValidator,
    b64url_decode,
    b64url_encode,
    encode_hs,
    parse_compact,
    parse_jwk,
    parse_jwks,
    peek_header,
    verify_jwt,
    verify_jwt_async,
)

pytestmark = pytest.mark.edge_safe

# --- RFC 7515 Appendix A ----------------------------------------------------------------

A_PAYLOAD = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
A1_TOKEN = f"eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.{A_PAYLOAD}.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
A1_JWK = {
    "kty": "oct",
    "k": "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow",
}
A1_EXP = 1300819380

A2_JWK = {
    "kty": "RSA",
    "n": "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS"
    "-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2Cap"
    "Hg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4"
    "FRWyuXpoQ",
    "e": "AQAB",
}
A2_TOKEN = (
    f"eyJhbGciOiJSUzI1NiJ9.{A_PAYLOAD}."
    "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t"
    "1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jz"
    "DwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe7"
    "7Rw"
)
A3_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}
A3_TOKEN = (
    f"eyJhbGciOiJFUzI1NiJ9.{A_PAYLOAD}."
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
)
A4_JWK = {
    "kty": "EC",
    "crv": "P-521",
    "x": "AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvLFV1jSfS9tsz4qUxcWceqwQGk",
    "y": "ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3kyMj2",
}
A4_TOKEN = (
    "eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA."
    "AdwMgeerwtHoh-l192l60hp9wAHZFVJbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZqwqT2SI-KGDKB34XO0aw_7XdtAG8GaSwFKdCAPZgoXD2YBJZC"
    "PEX3xKpRwcdOO8KpEHwJjyqOgzDO7iKvU8vcnwNrmxYbSW9ERBXukOXolLzeO_Jn"
)
A5_TOKEN = f"eyJhbGciOiJub25lIn0.{A_PAYLOAD}."  # unsecured JWS

BEFORE_EXP = A1_EXP - 100


# --- a textbook verifier (stdlib only) --------------------------------------------------

_DIGEST_INFO_SHA256 = bytes.fromhex("3031300d060960864801650304020105000420")
_CURVE = {
    "P-256": (
        2**256 - 2**224 + 2**192 + 2**96 - 1,
        0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
        (
            0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
            0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
        ),
        hashlib.sha256,
    ),
    "P-521": (
        2**521 - 1,
        0x01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409,
        (
            0x00C6858E06B70404E9CD9E3ECB662395B4429C648139053FB521F828AF606B4D3DBAA14B5E77EFE75928FE1DC127A2FFA8DE3348B3C1856A429BF97E7E31C2E5BD66,
            0x011839296A789A3BC0045C8A5FB42C7D1BD998F54449579B446817AFBD17273E662C97EE72995EF42640C550B9013FAD0761353C7086A272C24088BE94769FD16650,
        ),
        hashlib.sha512,
    ),
}
Point = tuple[int, int] | None


def _add(p: int, a: Point, b: Point) -> Point:
    if a is None:
        return b
    if b is None:
        return a
    (x1, y1), (x2, y2) = a, b
    if x1 == x2 and (y1 + y2) % p == 0:
        return None
    lam = (3 * x1 * x1 - 3) * pow(2 * y1, -1, p) % p if a == b else (y2 - y1) * pow(x2 - x1, -1, p) % p
    x3 = (lam * lam - x1 - x2) % p
    return x3, (lam * (x1 - x3) - y1) % p


def _mul(p: int, k: int, point: Point) -> Point:
    out: Point = None
    while k:
        if k & 1:
            out = _add(p, out, point)
        point = _add(p, point, point)
        k >>= 1
    return out


class TextbookVerifier:
    """RS256 and ES256/ES512 from their definitions; records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes, bytes]] = []

    def verify(self, alg: str, key: Jwk, signing_input: bytes, signature: bytes) -> bool:
        self.calls.append((alg, signing_input, signature))
        if alg == "RS256":
            n, e = key.rsa_numbers()
            k = (n.bit_length() + 7) // 8
            em = pow(int.from_bytes(signature, "big"), e, n).to_bytes(k, "big")
            t = _DIGEST_INFO_SHA256 + hashlib.sha256(signing_input).digest()
            return em == b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
        if alg in ("ES256", "ES512"):
            p, order, g, h = _CURVE[key.crv or ""]
            half = len(signature) // 2
            r, s = int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
            if not (0 < r < order and 0 < s < order):
                return False
            z = int.from_bytes(h(signing_input).digest(), "big")
            w = pow(s, -1, order)
            point = _add(p, _mul(p, z * w % order, g), _mul(p, r * w % order, key.ec_point()))
            return point is not None and point[0] % order == r
        return False


class AsyncVerifier(TextbookVerifier):
    def verify(self, alg: str, key: Jwk, signing_input: bytes, signature: bytes) -> Awaitable[bool]:  # type: ignore[override]
        result = super().verify(alg, key, signing_input, signature)

        async def answer() -> bool:
            await asyncio.sleep(0)
            return result

        return answer()


# --- the vectors -----------------------------------------------------------------------------

ISSUER_JOE = JwtPolicy(issuer="joe")


def test_rfc7515_a1_hs256_verifies() -> None:
    key = parse_jwk(A1_JWK, alg="HS256")
    v = verify_jwt(A1_TOKEN, key, now=BEFORE_EXP, policy=ISSUER_JOE)
    assert v.claims == {"iss": "joe", "exp": A1_EXP, "http://example.com/is_root": True}
    assert v.header == {"typ": "JWT", "alg": "HS256"}
    assert v.issuer == "joe" and v.key is key


def test_rfc7515_a1_expiry_with_leeway() -> None:
    key = parse_jwk(A1_JWK, alg="HS256")
    verify_jwt(A1_TOKEN, key, now=A1_EXP + 29, policy=ISSUER_JOE)
    with pytest.raises(InvalidToken) as info:
        verify_jwt(A1_TOKEN, key, now=A1_EXP + 30, policy=ISSUER_JOE)
    assert info.value.reason == "expired"
    with pytest.raises(InvalidToken):
        verify_jwt(A1_TOKEN, key, now=A1_EXP, policy=JwtPolicy(issuer="joe", leeway_s=0))


def test_rfc7515_a1_wrong_key_or_flipped_bit() -> None:
    with pytest.raises(InvalidToken) as info:
        verify_jwt(A1_TOKEN, Jwk.hmac(b"x" * 32), now=BEFORE_EXP)
    assert info.value.reason == "signature"
    head, payload, sig = A1_TOKEN.split(".")
    raw = bytearray(b64url_decode(sig))
    raw[0] ^= 1
    with pytest.raises(InvalidToken) as info:
        verify_jwt(
            f"{head}.{payload}.{b64url_encode(bytes(raw))}", parse_jwk(A1_JWK, alg="HS256"), now=BEFORE_EXP
        )
    assert info.value.reason == "signature"


def test_rfc7515_a2_rs256_through_a_plugged_verifier() -> None:
    verifier = TextbookVerifier()
    key = parse_jwk(A2_JWK, alg="RS256")
    assert key.rsa_bits == 2048
    v = verify_jwt(A2_TOKEN, key, now=BEFORE_EXP, policy=ISSUER_JOE, verifier=verifier)
    assert v.claims["iss"] == "joe"
    [(alg, signing_input, signature)] = verifier.calls
    assert alg == "RS256"
    assert signing_input == A2_TOKEN.rsplit(".", 1)[0].encode("ascii")
    assert len(signature) == 256


def test_rfc7515_a3_es256_raw_r_s() -> None:
    verifier = TextbookVerifier()
    key = parse_jwk(A3_JWK)
    assert key.alg == "ES256"  # the only algorithm for P-256
    verify_jwt(A3_TOKEN, key, now=BEFORE_EXP, policy=ISSUER_JOE, verifier=verifier)
    assert len(verifier.calls[0][2]) == 64  # r || s, not DER
    # swapping r and s must fail
    head, payload, sig = A3_TOKEN.split(".")
    raw = b64url_decode(sig)
    swapped = f"{head}.{payload}.{b64url_encode(raw[32:] + raw[:32])}"
    with pytest.raises(InvalidToken) as info:
        verify_jwt(swapped, key, now=BEFORE_EXP, verifier=verifier)
    assert info.value.reason == "signature"


def test_rfc7515_a4_es512_vector_and_non_json_payload() -> None:
    key = parse_jwk(A4_JWK)
    assert key.alg == "ES512"
    head, payload, sig = A4_TOKEN.split(".")
    assert TextbookVerifier().verify("ES512", key, f"{head}.{payload}".encode(), b64url_decode(sig))
    # The A.4 payload ("Payload") is not a JWT claims set: refused as malformed.
    with pytest.raises(InvalidToken) as info:
        verify_jwt(A4_TOKEN, key, now=0, verifier=TextbookVerifier())
    assert info.value.reason == "malformed"


def test_rfc7515_a5_unsecured_jws_is_refused() -> None:
    with pytest.raises(InvalidToken) as info:
        verify_jwt(A5_TOKEN, parse_jwk(A1_JWK, alg="HS256"), now=BEFORE_EXP)
    assert info.value.reason == "malformed"


def test_ecdsa_signature_of_the_wrong_length_never_reaches_the_verifier() -> None:
    verifier = TextbookVerifier()
    head, payload, sig = A3_TOKEN.split(".")
    der_like = b"\x30\x44" + b64url_decode(sig) + b"\x00\x00"
    with pytest.raises(InvalidToken) as info:
        verify_jwt(f"{head}.{payload}.{b64url_encode(der_like)}", parse_jwk(A3_JWK), now=0, verifier=verifier)
    assert info.value.reason == "signature"
    assert verifier.calls == []


def test_async_verifier_path() -> None:
    key = parse_jwk(A3_JWK)
    v = asyncio.run(verify_jwt_async(A3_TOKEN, key, now=BEFORE_EXP, verifier=AsyncVerifier()))
    assert v.claims["iss"] == "joe"
    with pytest.raises(InvalidInput):
        verify_jwt(A3_TOKEN, key, now=BEFORE_EXP, verifier=AsyncVerifier())


def test_a_truthy_but_not_true_verifier_answer_is_a_refusal() -> None:
    class Sloppy:
        def verify(self, alg: str, key: Jwk, signing_input: bytes, signature: bytes) -> bool:
            return 1  # type: ignore[return-value]

    with pytest.raises(InvalidToken):
        verify_jwt(A3_TOKEN, parse_jwk(A3_JWK), now=BEFORE_EXP, verifier=Sloppy())


# --- algorithm policy (RFC 8725 §2.1, §3.1) ------------------------------------------------

SECRET = b"s" * 64
HS = Jwk.hmac(SECRET, "HS256")
NOW = 1_800_000_000


def _hs_token(
    header: dict[str, Any], claims: dict[str, Any], secret: bytes = SECRET, digest: Any = None
) -> str:
    h = b64url_encode(json.dumps(header).encode())
    p = b64url_encode(json.dumps(claims).encode())
    alg = header.get("alg", "HS256")
    hash_fn = digest or {"HS384": hashlib.sha384, "HS512": hashlib.sha512}.get(alg, hashlib.sha256)
    sig = hmac.new(secret, f"{h}.{p}".encode(), hash_fn).digest()
    return f"{h}.{p}.{b64url_encode(sig)}"


CLAIMS = {"sub": "user-42", "exp": NOW + 600, "iat": NOW - 10}


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", " none"])
def test_alg_none_in_any_casing_is_refused(alg: str) -> None:
    h = b64url_encode(json.dumps({"alg": alg}).encode())
    p = b64url_encode(json.dumps(CLAIMS).encode())
    for sig in ("", b64url_encode(b"x" * 32)):
        with pytest.raises(InvalidToken) as info:
            verify_jwt(f"{h}.{p}.{sig}", HS, now=NOW)
        assert info.value.reason in ("algorithm", "malformed")


def test_hs_token_against_an_rsa_key_is_refused_however_it_was_made() -> None:
    """The classic confusion: HMAC over the token with the RSA public key as secret."""
    rsa_key = parse_jwk(A2_JWK, alg="RS256")
    for secret in (
        json.dumps(A2_JWK).encode(),
        b64url_decode(A2_JWK["n"]),
        A2_JWK["n"].encode(),
    ):
        token = _hs_token({"alg": "HS256"}, CLAIMS, secret=secret)
        with pytest.raises(InvalidToken) as info:
            verify_jwt(token, rsa_key, now=NOW, verifier=TextbookVerifier())
        assert info.value.reason == "algorithm"


def test_a_key_fixes_its_algorithm() -> None:
    hs512 = Jwk.hmac(SECRET, "HS512")
    token = _hs_token({"alg": "HS256"}, CLAIMS)
    with pytest.raises(InvalidToken) as info:
        verify_jwt(token, hs512, now=NOW)
    assert info.value.reason == "algorithm"
    # the policy can narrow, never widen
    with pytest.raises(InvalidInput):
        JwtValidator(HS, JwtPolicy(algorithms=frozenset({"RS256"})))
    with pytest.raises(InvalidInput):
        parse_jwk({**A1_JWK, "alg": "HS256"}, alg="HS512")


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hs_family_round_trip(alg: str) -> None:
    key = Jwk.hmac(SECRET, alg, kid="k1")
    token = encode_hs(CLAIMS, key)
    assert peek_header(token) == {"alg": alg, "typ": "JWT", "kid": "k1"}
    assert verify_jwt(token, key, now=NOW).subject == "user-42"
    assert verify_jwt(_hs_token({"alg": alg}, CLAIMS), key, now=NOW).subject == "user-42"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"alg": "HS256", "crit": ["exp-ext"], "exp-ext": 1}, "header"),  # not understood
        ({"alg": "HS256", "crit": ["b64"], "b64": False}, "header"),  # RFC 7797
        ({"alg": "HS256", "b64": False}, "header"),
        ({"alg": "HS256", "crit": ["alg"]}, "header"),  # registered names may not be critical
        ({"alg": "HS256", "crit": []}, "header"),
        ({"alg": "HS256", "crit": "exp-ext"}, "header"),
        ({"alg": "HS256", "crit": ["x", "x"], "x": 1}, "header"),
        ({"alg": "HS256", "crit": ["missing"]}, "header"),
        ({"alg": "HS256", "zip": "DEF"}, "header"),
        ({"alg": "HS256", "enc": "A128GCM"}, "header"),
        ({"alg": "HS256", "kid": 7}, "header"),
        ({"alg": "HS256", "typ": 1}, "header"),
        ({"alg": 256}, "algorithm"),
        ({}, "algorithm"),
        ({"alg": "RS256"}, "algorithm"),
        ({"alg": "HS256", "kid": "other"}, "key"),
    ],
)
def test_header_policy(header: dict[str, Any], reason: str) -> None:
    key = Jwk.hmac(SECRET, "HS256", kid="k1")
    with pytest.raises(InvalidToken) as info:
        verify_jwt(_hs_token(header, CLAIMS), key, now=NOW)
    assert info.value.reason == reason


def test_understood_crit_extension_is_accepted() -> None:
    token = _hs_token({"alg": "HS256", "crit": ["exp-ext"], "exp-ext": 1}, CLAIMS)
    verify_jwt(token, HS, now=NOW, policy=JwtPolicy(understood_crit=frozenset({"exp-ext"})))


def test_key_selection_by_kid_and_rotation_without_kid() -> None:
    old, new = Jwk.hmac(b"o" * 32, kid="2025"), Jwk.hmac(b"n" * 32, kid="2026")
    assert verify_jwt(encode_hs(CLAIMS, new), [old, new], now=NOW).key is new
    assert verify_jwt(encode_hs(CLAIMS, old), [old, new], now=NOW).key is old
    # no kid in the token: every key of the right alg is tried
    plain_old = Jwk.hmac(b"o" * 32)
    assert (
        verify_jwt(_hs_token({"alg": "HS256"}, CLAIMS, b"o" * 32), [new, plain_old], now=NOW).key is plain_old
    )
    with pytest.raises(InvalidToken) as info:
        verify_jwt(encode_hs(CLAIMS, Jwk.hmac(b"z" * 32, kid="2027")), [old, new], now=NOW)
    assert info.value.reason == "key"


def test_jku_x5u_and_embedded_jwk_are_ignored() -> None:
    attacker = Jwk.hmac(b"a" * 32)
    token = encode_hs(
        CLAIMS, attacker, headers={"jku": "https://evil.example/jwks", "jwk": attacker.to_jwk(), "x5u": "x"}
    )
    with pytest.raises(InvalidToken) as info:
        verify_jwt(token, HS, now=NOW)
    assert info.value.reason == "signature"


@pytest.mark.parametrize(
    ("policy_typ", "token_typ", "ok"),
    [
        ("at+jwt", "at+jwt", True),
        ("at+jwt", "application/AT+JWT", True),
        ("at+jwt", "JWT", False),
        ("at+jwt", None, False),
        (None, "anything", True),
    ],
)
def test_explicit_typing(policy_typ: str | None, token_typ: str | None, ok: bool) -> None:
    header: dict[str, Any] = {"alg": "HS256"}
    if token_typ is not None:
        header["typ"] = token_typ
    token = _hs_token(header, CLAIMS)
    policy = JwtPolicy(typ=policy_typ)
    if ok:
        verify_jwt(token, HS, now=NOW, policy=policy)
    else:
        with pytest.raises(InvalidToken) as info:
            verify_jwt(token, HS, now=NOW, policy=policy)
        assert info.value.reason == "type"


# --- claims ----------------------------------------------------------------------------------


def _claims_reason(claims: dict[str, Any], policy: JwtPolicy | None = None, now: float = NOW) -> str | None:
    try:
        verify_jwt(_hs_token({"alg": "HS256"}, claims), HS, now=now, policy=policy)
    except InvalidToken as exc:
        return exc.reason
    return None


@pytest.mark.parametrize(
    ("claims", "policy", "reason"),
    [
        ({"exp": NOW + 1}, None, None),
        ({"exp": NOW - 30}, None, "expired"),  # leeway 30: now >= exp + 30
        ({"exp": NOW - 29}, None, None),
        ({"exp": NOW + 0.5}, JwtPolicy(leeway_s=0), None),  # fractional NumericDate
        ({"exp": "1800000600"}, None, "claim"),
        ({"exp": True}, None, "claim"),
        ({"exp": None}, None, "claim"),
        ({}, None, "missing_claim"),
        ({}, JwtPolicy(required_claims=()), None),
        ({"exp": NOW + 60, "nbf": NOW + 31}, None, "not_yet_valid"),
        ({"exp": NOW + 60, "nbf": NOW + 30}, None, None),
        ({"exp": NOW + 60, "iat": NOW + 31}, None, "issued_in_future"),
        ({"exp": NOW + 60, "iat": NOW - 3600}, JwtPolicy(max_age_s=600), "too_old"),
        ({"exp": NOW + 60, "iat": NOW - 600}, JwtPolicy(max_age_s=600), None),
        ({"exp": NOW + 60}, JwtPolicy(max_age_s=600), "missing_claim"),
        ({"exp": NOW + 60, "iss": "https://idp.example"}, JwtPolicy(issuer="https://idp.example"), None),
        ({"exp": NOW + 60, "iss": "https://idp.example/"}, JwtPolicy(issuer="https://idp.example"), "issuer"),
        ({"exp": NOW + 60}, JwtPolicy(issuer="https://idp.example"), "issuer"),
        ({"exp": NOW + 60, "iss": 7}, None, "claim"),
        ({"exp": NOW + 60, "sub": ["a"]}, None, "claim"),
        ({"exp": NOW + 60, "aud": "api"}, JwtPolicy(audience="api"), None),
        ({"exp": NOW + 60, "aud": ["web", "api"]}, JwtPolicy(audience="api"), None),
        ({"exp": NOW + 60, "aud": ["web"]}, JwtPolicy(audience=frozenset({"api", "admin"})), "audience"),
        ({"exp": NOW + 60}, JwtPolicy(audience="api"), "audience"),
        ({"exp": NOW + 60, "aud": "api"}, None, "audience"),  # RFC 7519 §4.1.3
        ({"exp": NOW + 60, "aud": []}, JwtPolicy(audience="api"), "claim"),
        ({"exp": NOW + 60, "aud": ["api", 3]}, JwtPolicy(audience="api"), "claim"),
        ({"exp": NOW + 60, "jti": 5}, None, "claim"),
    ],
)
def test_claims(claims: dict[str, Any], policy: JwtPolicy | None, reason: str | None) -> None:
    assert _claims_reason(claims, policy) == reason


def test_claims_are_checked_only_after_the_signature() -> None:
    token = _hs_token({"alg": "HS256"}, {"exp": NOW - 9999}, secret=b"q" * 32)
    with pytest.raises(InvalidToken) as info:
        verify_jwt(token, HS, now=NOW)
    assert info.value.reason == "signature"  # not "expired": unverified claims say nothing


def test_scopes_from_scope_or_scp() -> None:
    v = verify_jwt(_hs_token({"alg": "HS256"}, {**CLAIMS, "scope": "a b  c"}), HS, now=NOW)
    assert v.scopes == ("a", "b", "c")
    v = verify_jwt(_hs_token({"alg": "HS256"}, {**CLAIMS, "scp": ["x", 1, "y"]}), HS, now=NOW)
    assert v.scopes == ("x", "y")


# --- structure ---------------------------------------------------------------------------

GOOD = encode_hs(CLAIMS, HS)
H, P, S = GOOD.split(".")
DUP_HEADER = b64url_encode(b'{"alg":"HS256","alg":"none"}')
NAN_CLAIMS = b64url_encode(b'{"exp":NaN}')
DEEP_OBJECT = b64url_encode(b'{"a":' * 40 + b"1" + b"}" * 40)
DEEP_ARRAY = b64url_encode(b"[" * 5000 + b"]" * 5000)
STRING_CLAIMS = b64url_encode(b'"just a string"')


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        f"{H}.{P}",
        f"{H}.{P}.{S}.",
        f"{H}.{P}.{S}.x.y",  # JWE shape
        f"{H}=.{P}.{S}",  # padding
        f"{H}.{P}.{S}=",
        f"{H}.{P}.{S[:-1]}+",  # standard alphabet
        f"{H}.{P}.{S[:-1]}/",
        f"{H}.{P} .{S}",
        f"{H}.{P}.{S}\n",
        f" {H}.{P}.{S}",
        f"{H}.{P}.{S[:-1]}",  # impossible length or non-canonical
        f"{b64url_encode(b'[1,2]')}.{P}.{S}",  # header not an object
        f"{b64url_encode(b'not json')}.{P}.{S}",
        f"{b64url_encode(bytes([0xFF, 0xFE]))}.{P}.{S}",  # not UTF-8
        f"{DUP_HEADER}.{P}.{S}",  # duplicate member
        f"{H}.{NAN_CLAIMS}.{S}",
        f"{H}.{DEEP_OBJECT}.{S}",  # deep nesting
        f"{H}.{DEEP_ARRAY}.{S}",
        f"{H}.{STRING_CLAIMS}.{S}",
        "é.é.é",
    ],
)
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(InvalidToken) as info:
        verify_jwt(token, HS, now=NOW)
    assert info.value.reason in ("malformed", "too_large")


def test_non_canonical_base64url_is_refused() -> None:
    # "QQ" and "QR" both decode to b"A" with lenient decoders; only "QQ" is canonical.
    assert b64url_decode("QQ") == b"A"
    with pytest.raises(ValueError):
        b64url_decode("QR")


def test_size_limit() -> None:
    big = encode_hs({**CLAIMS, "pad": "x" * 9000}, HS)
    with pytest.raises(InvalidToken) as info:
        verify_jwt(big, HS, now=NOW)
    assert info.value.reason == "too_large"
    assert verify_jwt(big, HS, now=NOW, policy=JwtPolicy(max_token_bytes=20_000)).claims["pad"]


def test_bytes_tokens_are_accepted_and_non_strings_refused() -> None:
    assert verify_jwt(GOOD.encode(), HS, now=NOW).subject == "user-42"
    with pytest.raises(InvalidToken):
        verify_jwt(None, HS, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(InvalidToken):
        verify_jwt(b"\xff.\xff.\xff", HS, now=NOW)


@given(st.text(max_size=300))
def test_any_text_gives_invalid_token_only(text: str) -> None:
    try:
        verify_jwt(text, HS, now=NOW)
    except InvalidToken:
        return
    raise AssertionError("an arbitrary string verified")


_SEGMENT = st.one_of(
    st.binary(max_size=80).map(b64url_encode),
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/. ", max_size=60),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=8,
    ).map(lambda v: b64url_encode(json.dumps(v).encode())),
)


@given(st.lists(_SEGMENT, min_size=1, max_size=5))
def test_structured_garbage_gives_invalid_token_only(segments: list[str]) -> None:
    token = ".".join(segments)
    for keys in (HS, [HS, parse_jwk(A3_JWK)]):
        try:
            verify_jwt(token, keys, now=NOW, verifier=TextbookVerifier())
        except InvalidToken:
            continue
        raise AssertionError("garbage verified")


@given(
    st.dictionaries(st.text(max_size=8), st.text(max_size=8) | st.integers(), max_size=4),
    st.binary(max_size=64),
)
def test_header_fuzz_with_valid_hmac_gives_invalid_token_or_success(
    extra: dict[str, Any], claims_pad: bytes
) -> None:
    header = {"alg": "HS256", **extra}
    token = _hs_token(header, {**CLAIMS, "pad": claims_pad.hex()})
    try:
        v = verify_jwt(token, HS, now=NOW)
    except InvalidToken:
        return
    assert v.header["alg"] == "HS256"


# --- the JWK model -------------------------------------------------------------------------


def test_jwk_members_and_repr() -> None:
    key = parse_jwk({**A1_JWK, "kid": "a1", "use": "sig", "key_ops": ["sign", "verify"]}, alg="HS256")
    assert key.kid == "a1" and key.key_ops == ("sign", "verify")
    assert A1_JWK["k"] not in repr(key)
    assert parse_jwk(key.to_jwk()).secret == key.secret
    assert parse_jwk(json.dumps(A3_JWK)).crv == "P-256"
    assert (
        parse_jwk({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}).alg
        == "EdDSA"
    )


def _small_rsa(bits: int) -> dict[str, str]:
    n = (1 << (bits - 1)) | 1  # not a real modulus: only its size matters here
    return {"kty": "RSA", "alg": "RS256", "n": b64url_encode(n.to_bytes(bits // 8, "big")), "e": "AQAB"}


@pytest.mark.parametrize(
    ("jwk", "alg"),
    [
        (A2_JWK, None),  # RSA without alg: ambiguous
        (A1_JWK, None),  # oct without alg
        (_small_rsa(1024), None),
        (_small_rsa(2040), None),
        ({**A2_JWK, "alg": "RS256", "d": "AQAB"}, None),  # private member
        ({**A3_JWK, "d": "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}, None),
        ({**A2_JWK, "alg": "RS256", "use": "enc"}, None),
        ({**A2_JWK, "alg": "RS256", "key_ops": ["encrypt", "verify"]}, None),
        ({**A2_JWK, "alg": "RS256", "key_ops": ["sign"]}, None),
        ({**A2_JWK, "alg": "RS256", "key_ops": ["verify", "verify"]}, None),
        ({**A2_JWK, "alg": "RS256", "key_ops": "verify"}, None),
        ({**A2_JWK, "alg": "ES256"}, None),  # kty/alg disagree
        ({**A2_JWK, "alg": "HS256"}, None),
        ({**A2_JWK, "alg": "RS256", "e": "AAE"}, None),  # e = 1
        ({**A2_JWK, "alg": "RS256", "e": "Ag"}, None),  # e even
        ({**A3_JWK, "alg": "ES384"}, None),  # curve/alg disagree
        ({**A3_JWK, "y": A3_JWK["x"]}, None),  # not on the curve
        ({**A3_JWK, "x": b64url_encode(b"\x01" * 31)}, None),  # wrong length
        ({**A3_JWK, "crv": "secp256k1"}, "ES256"),
        ({"kty": "OKP", "crv": "X25519", "x": b64url_encode(b"\x01" * 32)}, "EdDSA"),
        ({"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(b"\x01" * 31)}, None),
        ({"kty": "OKP", "crv": "Ed448", "x": b64url_encode(b"\x01" * 57)}, "Ed25519"),
        ({**A1_JWK, "k": b64url_encode(b"short")}, "HS256"),
        ({**A1_JWK, "k": b64url_encode(b"x" * 40)}, "HS384"),  # HS384 needs 48 bytes
        ({**A1_JWK, "k": A1_JWK["k"] + "="}, "HS256"),
        ({**A1_JWK, "alg": "none"}, None),
        ({**A1_JWK, "alg": "NONE"}, None),
        ({**A1_JWK, "alg": "HS999"}, None),
        ({**A1_JWK, "kid": ""}, "HS256"),
        ({"kty": "foo"}, None),
        ([], None),
        ("{not json", None),
    ],
)
def test_bad_jwks_are_refused(jwk: Any, alg: str | None) -> None:
    with pytest.raises(InvalidInput):
        parse_jwk(jwk, alg=alg)


def test_min_rsa_bits_can_be_raised_never_lowered() -> None:
    with pytest.raises(InvalidInput):
        parse_jwk(A2_JWK, alg="RS256", min_rsa_bits=3072)
    with pytest.raises(InvalidInput):
        parse_jwk(A2_JWK, alg="RS256", min_rsa_bits=1024)


def test_jwks_skips_unusable_keys_and_refuses_ambiguity() -> None:
    jwks = {
        "keys": [
            {**A2_JWK, "alg": "RS256", "kid": "rsa-1"},
            {**A3_JWK, "kid": "ec-1"},
            {"kty": "RSA", "use": "enc", "n": A2_JWK["n"], "e": "AQAB", "kid": "enc"},
            {"kty": "unknown"},
        ]
    }
    ks = parse_jwks(jwks)
    assert [k.kid for k in ks] == ["rsa-1", "ec-1"]
    assert [i for i, _ in ks.skipped] == [2, 3]
    assert "keys[2].use" in ks.skipped[0][1]
    assert ks.by_kid("ec-1")[0].alg == "ES256"
    assert len(parse_jwks(json.dumps(jwks))) == 2
    with pytest.raises(InvalidInput):
        parse_jwks({"keys": [{**A3_JWK, "kid": "x"}, {**A3_JWK, "kid": "x"}]})
    with pytest.raises(InvalidInput):
        parse_jwks({"keys": [{"kty": "unknown"}]})
    with pytest.raises(InvalidInput):
        parse_jwks({"keys": "nope"})


def test_jwks_token_selects_its_key_by_kid() -> None:
    ks = parse_jwks({"keys": [{**A3_JWK, "kid": "ec-1"}, {**A2_JWK, "alg": "RS256", "kid": "rsa-1"}]})
    verify_jwt(A3_TOKEN, ks, now=BEFORE_EXP, verifier=TextbookVerifier())  # no kid: by alg


def test_validator_construction_errors() -> None:
    with pytest.raises(InvalidInput):
        JwtValidator([])
    with pytest.raises(InvalidInput):
        JwtValidator([A1_JWK])  # type: ignore[list-item]
    with pytest.raises(InvalidInput):
        JwtValidator(parse_jwk(A3_JWK))  # asymmetric key without a verifier
    with pytest.raises(InvalidInput):
        JwtValidator(parse_jwk(A3_JWK), verifier=object())  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        verify_jwt(GOOD, HS, now=float("nan"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"leeway_s": -1},
        {"leeway_s": 1.5},
        {"max_age_s": 0},
        {"max_token_bytes": 10},
        {"issuer": ""},
        {"audience": frozenset()},
        {"audience": frozenset({""})},
        {"required_claims": "exp"},
        {"algorithms": frozenset({"none"})},
        {"algorithms": frozenset()},
    ],
)
def test_bad_policies(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        JwtPolicy(**kwargs)


def test_encode_hs_refuses_what_it_cannot_sign() -> None:
    with pytest.raises(InvalidInput):
        encode_hs(CLAIMS, parse_jwk(A3_JWK))
    with pytest.raises(InvalidInput):
        encode_hs(CLAIMS, HS, headers={"alg": "HS512"})
    with pytest.raises(InvalidInput):
        encode_hs({"exp": float("nan")}, HS)


# --- the error ------------------------------------------------------------------------------


def test_invalid_token_error_shape() -> None:
    try:
        verify_jwt(A1_TOKEN, HS, now=BEFORE_EXP)
    except InvalidToken as exc:
        err = exc
    assert isinstance(err, EdgeKvError)
    assert err.status == 401 and err.code == "invalid_token" and err.error == "invalid_token"
    assert err.to_json()["code"] == "invalid_token"
    assert isinstance(error_from_code("invalid_token", "x"), InvalidToken)
    assert err.www_authenticate(realm="api") == (
        'Bearer realm="api", error="invalid_token", error_description="the signature does not verify"'
    )
    assert InvalidToken('quote " and \\ backslash').www_authenticate() == (
        'Bearer error="invalid_token", error_description="quote  and  backslash"'
    )


def test_peek_header_is_unverified_but_strict() -> None:
    assert peek_header(A1_TOKEN) == {"typ": "JWT", "alg": "HS256"}
    with pytest.raises(InvalidToken):
        peek_header("a.b")


def test_b64url_helpers() -> None:
    for data in (b"", b"\x00", b"\xff\xfe", bytes(range(256))):
        assert b64url_decode(b64url_encode(data)) == data
    assert base64.urlsafe_b64decode("AQAB") == b64url_decode("AQAB")


def test_parse_compact_exposes_the_exact_signing_input() -> None:
    parsed = parse_compact(A1_TOKEN)
    assert parsed.signing_input == A1_TOKEN.rsplit(".", 1)[0].encode("ascii")
    assert parsed.signature == b64url_decode("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
    assert parsed.header == {"typ": "JWT", "alg": "HS256"}
