"""WebCryptoVerifier: the WebCrypto parameters per JWS algorithm and the CryptoKey cache
(with a fake ``crypto.subtle`` on CPython), and, inside Pyodide (Node 22's real
``crypto.subtle``), the published vectors: RFC 7515 A.2 (RS256), A.3 (ES256), A.4 (ES512)
and RFC 8037 A.4 (Ed25519). The host tests (tests/http/test_jwt_edge.py) add PS256,
ES384 and EdDSA tokens minted by PyJWT. Edge-safe: runs in Pyodide too.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from edge_kv.core.errors import InvalidInput
from edge_kv.core.jwt import InvalidToken, Jwk, JwtPolicy, b64url_decode, parse_compact, parse_jwk
from edge_kv.edge.auth.jwt import verify_token
from edge_kv.edge.runtime import to_py
from edge_kv.edge.runtime.webcrypto import (
    WebCryptoVerifier,
    import_algorithm,
    import_jwk,
    verify_algorithm,
)

IN_PYODIDE = sys.platform == "emscripten"

A_PAYLOAD = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
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
# RFC 8037 A.4: the payload is not a JSON object, so this goes to the verifier directly.
ED_JWK = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
ED_JWS = (
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)
BEFORE_EXP = 1300819380 - 100

RSA = parse_jwk(A2_JWK, alg="RS256")
P256 = parse_jwk(A3_JWK)
ED = parse_jwk(ED_JWK)


@pytest.mark.parametrize(
    ("alg", "key", "imported", "verified"),
    [
        (
            "RS256",
            RSA,
            {"name": "RSASSA-PKCS1-v1_5", "hash": {"name": "SHA-256"}},
            {"name": "RSASSA-PKCS1-v1_5"},
        ),
        (
            "RS512",
            RSA,
            {"name": "RSASSA-PKCS1-v1_5", "hash": {"name": "SHA-512"}},
            {"name": "RSASSA-PKCS1-v1_5"},
        ),
        (
            "PS256",
            RSA,
            {"name": "RSA-PSS", "hash": {"name": "SHA-256"}},
            {"name": "RSA-PSS", "saltLength": 32},
        ),
        (
            "PS384",
            RSA,
            {"name": "RSA-PSS", "hash": {"name": "SHA-384"}},
            {"name": "RSA-PSS", "saltLength": 48},
        ),
        (
            "PS512",
            RSA,
            {"name": "RSA-PSS", "hash": {"name": "SHA-512"}},
            {"name": "RSA-PSS", "saltLength": 64},
        ),
        (
            "ES256",
            P256,
            {"name": "ECDSA", "namedCurve": "P-256"},
            {"name": "ECDSA", "hash": {"name": "SHA-256"}},
        ),
        ("EdDSA", ED, {"name": "Ed25519"}, {"name": "Ed25519"}),
    ],
)
def test_webcrypto_parameters(alg: str, key: Jwk, imported: dict[str, Any], verified: dict[str, Any]) -> None:
    assert import_algorithm(alg, key) == imported
    assert verify_algorithm(alg, key) == verified


def test_imported_jwk_is_public_material_only() -> None:
    assert import_jwk(RSA) == {"kty": "RSA", "n": RSA.members["n"], "e": "AQAB"}
    assert import_jwk(P256) == {"kty": "EC", **A3_JWK}
    with pytest.raises(InvalidInput):
        import_jwk(Jwk.hmac(b"k" * 32))


@pytest.mark.parametrize(
    ("alg", "key"), [("ES256", RSA), ("RS256", P256), ("HS256", RSA), ("EdDSA", P256), ("RS999", RSA)]
)
def test_mismatched_algorithms_are_invalid_tokens(alg: str, key: Jwk) -> None:
    with pytest.raises(InvalidToken):
        import_algorithm(alg, key)
    with pytest.raises(InvalidToken):
        verify_algorithm(alg, key)


class FakeSubtle:
    """Records importKey/verify; ``valid`` is the signature it accepts."""

    def __init__(self, valid: bytes = b"good", fail_import: bool = False, fail_verify: bool = False) -> None:
        self.valid = valid
        self.fail_import = fail_import
        self.fail_verify = fail_verify
        self.imports: list[tuple[Any, ...]] = []
        self.verifies = 0

    async def importKey(self, fmt: str, jwk: Any, params: Any, extractable: bool, usages: Any) -> Any:
        if self.fail_import:
            raise RuntimeError("NotSupportedError")
        self.imports.append((fmt, to_py(jwk), to_py(params), extractable, to_py(usages)))
        return object()

    async def verify(self, params: Any, key: Any, signature: Any, data: Any) -> Any:
        self.verifies += 1
        if self.fail_verify:
            raise RuntimeError("OperationError")
        sig = bytes(to_py(signature))
        return sig == self.valid


async def test_crypto_keys_are_imported_once_per_key() -> None:
    subtle = FakeSubtle()
    v = WebCryptoVerifier(subtle=subtle)
    rsa_a = parse_jwk({**A2_JWK, "kid": "a"}, alg="RS256")
    for _ in range(3):
        assert await v.verify("RS256", rsa_a, b"input", b"good") is True
        assert await v.verify("RS256", rsa_a, b"input", b"bad") is False
    assert len(subtle.imports) == 1 and v.imports == 1
    fmt, jwk, params, extractable, usages = subtle.imports[0]
    assert fmt == "jwk" and jwk["kty"] == "RSA" and extractable is False and list(usages) == ["verify"]
    assert params == {"name": "RSASSA-PKCS1-v1_5", "hash": {"name": "SHA-256"}}
    # Another kid, another algorithm on the same material, or new material under a known kid.
    await v.verify("RS256", parse_jwk({**A2_JWK, "kid": "b"}, alg="RS256"), b"i", b"good")
    await v.verify("PS256", parse_jwk({**A2_JWK, "kid": "a"}, alg="PS256"), b"i", b"good")
    await v.verify("ES256", parse_jwk({**A3_JWK, "kid": "a"}), b"i", b"good")
    assert len(subtle.imports) == 4 and v.cached_keys == 4


async def test_key_cache_is_bounded_lru() -> None:
    subtle = FakeSubtle()
    v = WebCryptoVerifier(max_cached_keys=2, subtle=subtle)
    keys = [parse_jwk({**A3_JWK, "kid": str(i)}) for i in range(3)]
    for k in (keys[0], keys[1], keys[0], keys[2], keys[0]):
        await v.verify("ES256", k, b"i", b"good")
    assert v.cached_keys == 2 and len(subtle.imports) == 3  # keys[1] was evicted, 0 kept
    await v.verify("ES256", keys[1], b"i", b"good")
    assert len(subtle.imports) == 4
    with pytest.raises(InvalidInput):
        WebCryptoVerifier(max_cached_keys=0)


async def test_runtime_refusals_are_401_never_500() -> None:
    with pytest.raises(InvalidToken) as err:
        await WebCryptoVerifier(subtle=FakeSubtle(fail_import=True)).verify("RS256", RSA, b"i", b"good")
    assert err.value.reason == "key" and err.value.status == 401
    assert (
        await WebCryptoVerifier(subtle=FakeSubtle(fail_verify=True)).verify("RS256", RSA, b"i", b"good")
        is False
    )


async def test_verify_token_uses_the_verifier_for_asymmetric_keys() -> None:
    subtle = FakeSubtle(valid=parse_compact(A3_TOKEN).signature)
    v = WebCryptoVerifier(subtle=subtle)
    token = await verify_token(A3_TOKEN, policy=JwtPolicy(), keys=[P256], verifier=v, now=BEFORE_EXP)
    assert token.issuer == "joe" and subtle.verifies == 1


# --------------------------------------------------------------------------------------
# the real crypto.subtle (Pyodide on Node 22)
# --------------------------------------------------------------------------------------

needs_webcrypto = pytest.mark.skipif(not IN_PYODIDE, reason="needs the JavaScript runtime's crypto.subtle")


def _split(token: str) -> tuple[bytes, bytes]:
    """Signing input and signature (A.4's payload is not JSON, so not parse_compact)."""
    head, body, sig = token.split(".")
    return f"{head}.{body}".encode(), b64url_decode(sig)


@needs_webcrypto
@pytest.mark.parametrize(
    ("token", "key"),
    [(A2_TOKEN, RSA), (A3_TOKEN, P256), (A4_TOKEN, parse_jwk(A4_JWK))],
    ids=["RS256", "ES256", "ES512"],
)
async def test_rfc7515_vectors_through_webcrypto(token: str, key: Jwk) -> None:
    v = WebCryptoVerifier()
    signing_input, signature = _split(token)
    assert await v.verify(key.alg, key, signing_input, signature) is True
    flipped = signature[:-1] + bytes([signature[-1] ^ 1])
    assert await v.verify(key.alg, key, signing_input, flipped) is False
    assert await v.verify(key.alg, key, signing_input + b"x", signature) is False
    assert v.imports == 1
    if token != A4_TOKEN:  # A.4's payload is not a JWT claims object
        verified = await verify_token(token, policy=JwtPolicy(), keys=[key], verifier=v, now=BEFORE_EXP)
        assert verified.claims["iss"] == "joe"


@needs_webcrypto
async def test_rfc8037_ed25519_through_webcrypto() -> None:
    head, body, sig = ED_JWS.split(".")
    v = WebCryptoVerifier()
    signing_input = f"{head}.{body}".encode()
    assert await v.verify("EdDSA", ED, signing_input, b64url_decode(sig)) is True
    assert await v.verify("EdDSA", ED, signing_input + b".", b64url_decode(sig)) is False


@needs_webcrypto
async def test_a_key_webcrypto_refuses_is_a_401() -> None:
    # A valid curve point the core accepts, but declared as the other curve's size:
    # force an import failure with a JWK whose x is not a valid Ed25519 encoding.
    bad = Jwk(kty="OKP", alg="EdDSA", members={"crv": "Ed25519", "x": "AAAA"})
    with pytest.raises(InvalidToken) as err:
        await WebCryptoVerifier().verify("EdDSA", bad, b"i", b"s" * 64)
    assert err.value.reason == "key"
