"""Published JWS examples verified inside the Worker (Pyodide 314 + Node's WebCrypto)
through the real host and the test-only ``POST /__jwt/verify`` route (src/jwt_demo.py).

Vectors, byte for byte from the RFCs: RFC 7515 appendix A.1 (HS256), A.2 (RS256), A.3
(ES256), A.4 (ES512); RFC 8037 appendix A.4 (Ed25519); RFC 7520 §4.1 (RS256), §4.2
(PS384), §4.3 (ES512), §4.4 (HS256). Each one is first checked on CPython with PyJWT's
JWS layer (``cryptography`` underneath), so a typo in a vector fails here rather than
being blamed on the Worker. The RFC 7515 A.1-A.3 payloads are JWT claims sets whose
``exp`` is in 2011: the route's test clock (``now``) verifies them as JWTs; the other
payloads are not claims sets and go through the route's ``payload_only`` mode. Flipping
any one bit of a signature (first, middle, last byte) must turn the 200 into a 401.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from jwt.api_jwk import PyJWK
from jwt.api_jws import PyJWS
from jwt.exceptions import InvalidSignatureError

pytestmark = pytest.mark.host_only


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# --- RFC 7515 appendix A -------------------------------------------------------------

RFC7515_PAYLOAD = (
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
)
RFC7515_EXP = 1300819380
RFC7515_CLAIMS = {"iss": "joe", "exp": RFC7515_EXP, "http://example.com/is_root": True}

A1_JWK = {
    "kty": "oct",
    "k": "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow",
}
A1_JWS = (
    f"eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.{RFC7515_PAYLOAD}.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
)

A2_JWK = {
    "kty": "RSA",
    "n": "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS"
    "-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2Cap"
    "Hg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4"
    "FRWyuXpoQ",
    "e": "AQAB",
}
A2_JWS = (
    f"eyJhbGciOiJSUzI1NiJ9.{RFC7515_PAYLOAD}."
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
A3_JWS = (
    f"eyJhbGciOiJFUzI1NiJ9.{RFC7515_PAYLOAD}."
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
)

A4_JWK = {
    "kty": "EC",
    "crv": "P-521",
    "x": "AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvLFV1jSfS9tsz4qUxcWceqwQGk",
    "y": "ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3kyMj2",
}
A4_JWS = (
    "eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA."
    "AdwMgeerwtHoh-l192l60hp9wAHZFVJbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZqwqT2SI-KGDKB34XO0aw_7XdtAG8GaSwFKdCAPZgoXD2YBJZC"
    "PEX3xKpRwcdOO8KpEHwJjyqOgzDO7iKvU8vcnwNrmxYbSW9ERBXukOXolLzeO_Jn"
)

# --- RFC 8037 appendix A.4 (Ed25519; A.1 is the key, A.2 its public part) --------------

ED25519_JWK = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
ED25519_JWS = (
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)

# --- RFC 7520 ("JOSE Cookbook") §3 keys and §4 signatures -----------------------------

BILBO = "bilbo.baggins@hobbiton.example"
RFC7520_EC_3_1 = {
    "kty": "EC",
    "kid": BILBO,
    "use": "sig",
    "crv": "P-521",
    "x": "AHKZLLOsCOzz5cY97ewNUajB957y-C-U88c3v13nmGZx6sYl_oJXu9A5RkTKqjqvjyekWF-7ytDyRXYgCF5cj0Kt",
    "y": "AdymlHvOiLxXkEhayXQnNCvDX4h9htZaCJN34kfmC6pV5OhQHiraVySsUdaQkAgDPrwQrJmbnX9cwlGfP-HqHZR1",
}
RFC7520_RSA_3_3 = {
    "kty": "RSA",
    "kid": BILBO,
    "use": "sig",
    "n": "n4EPtAOCc9AlkeQHPzHStgAbgs7bTZLwUBZdR8_KuKPEHLd4rHVTeT-O-XV2jRojdNhxJWTDvNd7nqQ0VEiZQHz_AJmSCpMaJMRBSFKrKb2wqV"
    "wGU_NsYOYL-QtiWN2lbzcEe6XC0dApr5ydQLrHqkHHig3RBordaZ6Aj-oBHqFEHYpPe7Tpe-OfVfHd1E6cS6M1FZcD1NNLYD5lFHpPI9bTwJlsde"
    "3uhGqC0ZCuEHg8lhzwOHrtIQbS0FVbb9k3-tVTU4fg_3L_vniUFAKwuCLqKnS2BYwdq_mzSnbLY7h_qixoR7jig3__kRhuaxwUkRz5iaiQkqgc5g"
    "HdrNP5zw",
    "e": "AQAB",
}
RFC7520_OCT_3_5 = {
    "kty": "oct",
    "kid": "018c0ae5-4d9b-471b-bfd6-eef314bc7037",
    "use": "sig",
    "alg": "HS256",
    "k": "hJtXIZ2uSN5kbQfbtTNWbpdmhkV8FJG-Onbc6mxCcYg",
}
RFC7520_PAYLOAD = (  # §4, Figure 7: RFC7520_TEXT below, UTF-8, base64url
    "SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5k"
    "IGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4"
)
RFC7520_TEXT = (
    "It\u2019s a dangerous business, Frodo, going out your door. You step onto the road, and if you don't keep"
    " your feet, there\u2019s no knowing where you might be swept off to."
)
RFC7520_4_1 = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9"
    f".{RFC7520_PAYLOAD}."
    "MRjdkly7_-oTPTS3AXP41iQIGKa80A0ZmTuV5MEaHoxnW2e5CZ5NlKtainoFmKZopdHM1O2U4mwzJdQx996ivp83xuglII7PNDi84wnB-BDkoBwA"
    "78185hX-Es4JIwmDLJK3lfWRa-XtL0RnltuYv746iYTh_qHRD68BNt1uSNCrUCTJDt5aAE6x8wW1Kt9eRo4QPocSadnHXFxnt8Is9UzpERV0ePPQ"
    "dLuW3IS_de3xyIrDaLGdjluPxUAhb6L2aXic1U12podGU0KLUQSE_oI-ZnmKJ3F4uOZDnd6QZWJushZ41Axf_fcIe8u9ipH84ogoree7vjbU5y18"
    "kDquDg"
)
RFC7520_4_2 = (
    "eyJhbGciOiJQUzM4NCIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9"
    f".{RFC7520_PAYLOAD}."
    "cu22eBqkYDKgIlTpzDXGvaFfz6WGoz7fUDcfT0kkOy42miAh2qyBzk1xEsnk2IpN6-tPid6VrklHkqsGqDqHCdP6O8TTB5dDDItllVo6_1OLPpcb"
    "UrhiUSMxbbXUvdvWXzg-UD8biiReQFlfz28zGWVsdiNAUf8ZnyPEgVFn442ZdNqiVJRmBqrYRXe8P_ijQ7p8Vdz0TTrxUeT3lm8d9shnr2lfJT8I"
    "mUjvAA2Xez2Mlp8cBE5awDzT0qI0n6uiP1aCN_2_jLAeQTlqRHtfa64QQSUmFAAjVKPbByi7xho0uTOcbH510a6GYmJUAfmWjwZ6oD4ifKo8DYM-"
    "X72Eaw"
)
RFC7520_4_3 = (
    "eyJhbGciOiJFUzUxMiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9"
    f".{RFC7520_PAYLOAD}."
    "AE_R_YZCChjn4791jSQCrdPZCNYqHXCTZH0-JZGYNlaAjP2kqaluUIIUnC9qvbu9Plon7KRTzoNEuT4Va2cmL1eJAQy3mtPBu_u_sDDyYjnAMDxX"
    "Pn7XrT0lw-kvAD890jl8e2puQens_IEKBpHABlsbEPX6sFY8OcGDqoRuBomu9xQ2"
)
RFC7520_4_4 = (
    "eyJhbGciOiJIUzI1NiIsImtpZCI6IjAxOGMwYWU1LTRkOWItNDcxYi1iZmQ2LWVlZjMxNGJjNzAzNyJ9"
    f".{RFC7520_PAYLOAD}."
    "s0h6KThzkfBBBkLspW1h84VsJZFTsPPqMDA7g1Md7p0"
)


@dataclass(frozen=True)
class Vector:
    name: str
    jws: str
    jwk: dict[str, Any]
    alg: str
    kid: str | None
    payload: bytes  # the decoded payload the RFC states
    jwt: bool  # a JWT claims set (RFC 7515 A.1-A.3): verified as a JWT with the test clock


VECTORS = [
    Vector("rfc7515-a1-hs256", A1_JWS, A1_JWK, "HS256", None, b64d(RFC7515_PAYLOAD), True),
    Vector("rfc7515-a2-rs256", A2_JWS, A2_JWK, "RS256", None, b64d(RFC7515_PAYLOAD), True),
    Vector("rfc7515-a3-es256", A3_JWS, A3_JWK, "ES256", None, b64d(RFC7515_PAYLOAD), True),
    Vector("rfc7515-a4-es512", A4_JWS, A4_JWK, "ES512", None, b"Payload", False),
    Vector(
        "rfc8037-a4-ed25519", ED25519_JWS, ED25519_JWK, "EdDSA", None, b"Example of Ed25519 signing", False
    ),
    Vector("rfc7520-4.1-rs256", RFC7520_4_1, RFC7520_RSA_3_3, "RS256", BILBO, RFC7520_TEXT.encode(), False),
    Vector("rfc7520-4.2-ps384", RFC7520_4_2, RFC7520_RSA_3_3, "PS384", BILBO, RFC7520_TEXT.encode(), False),
    Vector("rfc7520-4.3-es512", RFC7520_4_3, RFC7520_EC_3_1, "ES512", BILBO, RFC7520_TEXT.encode(), False),
    Vector(
        "rfc7520-4.4-hs256",
        RFC7520_4_4,
        RFC7520_OCT_3_5,
        "HS256",
        RFC7520_OCT_3_5["kid"],
        RFC7520_TEXT.encode(),
        False,
    ),
]
IDS = [v.name for v in VECTORS]
BEFORE_EXP = RFC7515_EXP - 100


def flip(jws: str, index: int) -> str:
    """``jws`` with one bit of its signature byte ``index`` flipped (negative: from the end)."""
    head, payload, sig = jws.split(".")
    raw = bytearray(b64d(sig))
    raw[index] ^= 0x01
    return f"{head}.{payload}.{b64e(bytes(raw))}"


def keyset(v: Vector) -> dict[str, Any]:
    return {"keys": [{**v.jwk, "alg": v.alg}]}


# --- CPython first: every byte of every vector, checked by PyJWT + cryptography -----------


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_vector_verifies_with_pyjwt_on_cpython(v: Vector) -> None:
    key = PyJWK({**v.jwk, "alg": v.alg})
    decoded = PyJWS().decode_complete(v.jws, key, algorithms=[v.alg])
    assert decoded["payload"] == v.payload
    assert decoded["header"]["alg"] == v.alg and decoded["header"].get("kid") == v.kid
    if v.jwt:
        assert json.loads(v.payload) == RFC7515_CLAIMS
    for index in (0, -1):
        with pytest.raises(InvalidSignatureError):
            PyJWS().decode_complete(flip(v.jws, index), key, algorithms=[v.alg])


# --- through the host: Pyodide + WebCrypto ----------------------------------------------


@pytest.fixture
async def api(service_host: str) -> AsyncIterator[httpx.AsyncClient]:
    """The session's host whose configuration enables EDGE_KV_TEST_CLOCK (the route exists)."""
    async with httpx.AsyncClient(base_url=service_host, timeout=30) as c:
        yield c


async def verify(api: httpx.AsyncClient, v: Vector, jws: str | None = None, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"token": v.jws if jws is None else jws, "jwks": keyset(v), "algorithms": [v.alg]}
    if not v.jwt:
        body["payload_only"] = True
    else:
        body.update(now=BEFORE_EXP, issuer="joe")
    body.update(extra)
    return await api.post("/__jwt/verify", json=body)


def assert_refused(r: httpx.Response, reason: str) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["reason"] == reason, r.text
    assert r.headers["www-authenticate"].startswith('Bearer realm="edge-kv", error="invalid_token"')


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
async def test_vector_verifies_inside_the_worker(api: httpx.AsyncClient, v: Vector) -> None:
    r = await verify(api, v)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["valid"] is True and data["alg"] == v.alg
    if v.jwt:
        assert data["claims"] == RFC7515_CLAIMS
    else:
        assert b64d(data["payload_b64"]) == v.payload
        assert data["payload"] == v.payload.decode("utf-8")
        assert data["header"]["alg"] == v.alg and data["header"].get("kid") == v.kid


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
async def test_a_flipped_signature_bit_is_refused(api: httpx.AsyncClient, v: Vector) -> None:
    size = len(b64d(v.jws.split(".")[2]))
    for index in (0, size // 2, size - 1):
        assert_refused(await verify(api, v, flip(v.jws, index)), "signature")


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
async def test_a_changed_payload_or_header_is_refused(api: httpx.AsyncClient, v: Vector) -> None:
    head, payload, sig = v.jws.split(".")
    raw = bytearray(b64d(payload))
    raw[-1] ^= 0x01
    if v.jwt:  # the claims must stay a JSON object for the signature check to be reached
        changed = json.dumps({**RFC7515_CLAIMS, "iss": "joe "}).encode()
        raw = bytearray(changed)
    assert_refused(await verify(api, v, f"{head}.{b64e(bytes(raw))}.{sig}"), "signature")
    # The same header with one more member: the signing input changes.
    header = json.loads(b64d(head))
    extended = b64e(json.dumps({**header, "x": 1}).encode())
    assert_refused(await verify(api, v, f"{extended}.{payload}.{sig}"), "signature")


@pytest.mark.parametrize("v", [v for v in VECTORS if v.jwt], ids=[v.name for v in VECTORS if v.jwt])
async def test_rfc7515_jwt_vectors_follow_the_test_clock(api: httpx.AsyncClient, v: Vector) -> None:
    # Without the test clock the 2011 tokens are expired; within the leeway they pass.
    assert_refused(await verify(api, v, now=None), "expired")
    assert (await verify(api, v, now=RFC7515_EXP + 29)).status_code == 200
    assert_refused(await verify(api, v, now=RFC7515_EXP + 30), "expired")
    assert_refused(await verify(api, v, now=RFC7515_EXP, leeway_s=0), "expired")
    # exp is required by default; required_claims can ask for more (or nothing).
    assert_refused(await verify(api, v, required_claims=["exp", "sub"]), "missing_claim")
    assert (await verify(api, v, required_claims=[])).status_code == 200


async def test_the_route_refuses_what_a_vector_is_not(api: httpx.AsyncClient) -> None:
    a4 = VECTORS[3]
    # A.4's payload is not a claims set: as a JWT it is malformed, whatever the clock.
    r = await api.post(
        "/__jwt/verify", json={"token": a4.jws, "jwks": keyset(a4), "now": 0, "required_claims": []}
    )
    assert_refused(r, "malformed")
    # The wrong key (the A.3 P-256 key under ES512 is not even the right size): no match.
    r = await api.post(
        "/__jwt/verify",
        json={
            "token": a4.jws,
            "jwks": {"keys": [{**RFC7520_EC_3_1, "kid": None, "alg": "ES512"}]},
            "payload_only": True,
        },
    )
    assert_refused(r, "signature")
    # An RS256 vector with an algorithm allow-list that leaves it out.
    rs = VECTORS[5]
    assert_refused(await verify(api, rs, algorithms=["ES256"]), "algorithm")
    # Unsecured (alg none) and crit are refused in payload_only mode too.
    head = b64e(json.dumps({"alg": "none"}).encode())
    assert_refused(await verify(api, rs, f"{head}.{RFC7520_PAYLOAD}.AAAA", algorithms=None), "algorithm")
    head = b64e(json.dumps({"alg": "RS256", "kid": BILBO, "crit": ["exp"], "exp": 1}).encode())
    assert_refused(await verify(api, rs, f"{head}.{RFC7520_PAYLOAD}.AAAA"), "header")
    # payload_only needs inline keys; a bad clock is a 400.
    r = await api.post(
        "/__jwt/verify", json={"token": rs.jws, "jwks_uri": "http://127.0.0.1:9/j", "payload_only": True}
    )
    assert r.status_code == 400, r.text
    r = await api.post("/__jwt/verify", json={"token": rs.jws, "jwks": keyset(rs), "now": "yesterday"})
    assert r.status_code == 400, r.text
