"""JWT verification inside the Worker (Pyodide 314 + WebCrypto) through the real host.

PyJWT mints tokens with keys from ``cryptography`` (RSA 2048, P-256, P-384, Ed25519, an
HMAC secret); ``POST /__jwt/verify`` (a test-configuration-only route, src/jwt_demo.py)
verifies them with :mod:`edge_kv.edge.auth.jwt`: the core's parsing and claims checks,
``crypto.subtle.importKey/verify`` for the asymmetric algorithms. Refusals are 401
problems, never 500. The ``jwks_uri`` variant fetches JWKS documents this test serves on
127.0.0.1 through the runtime's ``fetch`` and checks the isolate's JWKS cache: one fetch
while fresh, one refetch for a flood of unknown ``kid`` values, rotation, a dead endpoint.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from edge_kv.core.jwt import b64url_decode, b64url_encode

HMAC_SECRET = b"0123456789abcdef0123456789abcdef-edge-kv"
ISSUER = "https://idp.example"
AUDIENCE = "edge-api"


@dataclass
class Signer:
    alg: str
    kid: str
    private: Any
    public_jwk: dict[str, Any]

    def mint(self, claims: dict[str, Any] | None = None, **header: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-42", "iat": now, "exp": now + 300}
        body.update(claims or {})
        return pyjwt.encode(body, self.private, algorithm=self.alg, headers={"kid": self.kid, **header})


def _public_jwk(alg: str, kid: str, private: Any) -> dict[str, Any]:
    if alg.startswith(("RS", "PS")):
        jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    elif alg.startswith("ES"):
        jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    assert isinstance(jwk, dict)
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


@dataclass
class Keys:
    signers: dict[str, Signer]
    other_rsa: Any
    extra: list[Signer] = field(default_factory=list)

    def jwks(self, *names: str) -> dict[str, Any]:
        chosen = [self.signers[n] for n in names] if names else list(self.signers.values())
        return {"keys": [s.public_jwk for s in chosen]}


@pytest.fixture(scope="module")
def keys() -> Keys:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    p256 = ec.generate_private_key(ec.SECP256R1())
    p384 = ec.generate_private_key(ec.SECP384R1())
    ed = ed25519.Ed25519PrivateKey.generate()
    signers = {}
    for alg, private in (
        ("RS256", rsa_key),
        ("PS256", rsa_key),
        ("ES256", p256),
        ("ES384", p384),
        ("EdDSA", ed),
    ):
        kid = f"{alg.lower()}-1"
        signers[alg] = Signer(alg, kid, private, _public_jwk(alg, kid, private))
    hs_jwk = {"kty": "oct", "k": b64url_encode(HMAC_SECRET), "alg": "HS256", "kid": "hs-1"}
    signers["HS256"] = Signer("HS256", "hs-1", HMAC_SECRET, hs_jwk)
    return Keys(signers, rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture
async def api(service_host: str) -> AsyncIterator[httpx.AsyncClient]:
    """The session's host whose configuration enables EDGE_KV_TEST_CLOCK (the route exists)."""
    async with httpx.AsyncClient(base_url=service_host, timeout=30) as c:
        yield c


async def verify(api: httpx.AsyncClient, token: str, jwks: Any = None, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"token": token, "issuer": ISSUER, "audience": AUDIENCE, **extra}
    if jwks is not None:
        body["jwks"] = jwks
    return await api.post("/__jwt/verify", json=body)


def assert_refused(r: httpx.Response, reason: str) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["code"] == "invalid_token"
    assert problem["reason"] == reason, problem
    assert r.headers["www-authenticate"].startswith('Bearer realm="edge-kv", error="invalid_token"')


def _hs256(claims: dict[str, Any], secret: bytes, header: dict[str, Any]) -> str:
    signing_input = ".".join(b64url_encode(json.dumps(x).encode()) for x in (header, claims))
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url_encode(mac)}"


def _flip_signature(token: str) -> str:
    head, payload, sig = token.split(".")
    raw = bytearray(b64url_decode(sig))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{payload}.{b64url_encode(bytes(raw))}"


# --------------------------------------------------------------------------------------
# static JWKS
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "ES384", "EdDSA", "HS256"])
async def test_pyjwt_tokens_verify_inside_the_worker(api: httpx.AsyncClient, keys: Keys, alg: str) -> None:
    signer = keys.signers[alg]
    token = signer.mint({"scope": "orders:read"})
    r = await verify(api, token, keys.jwks(), algorithms=[alg])
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["valid"] is True
    assert data["alg"] == alg and data["kid"] == signer.kid
    assert data["claims"]["sub"] == "user-42" and data["claims"]["scope"] == "orders:read"
    # The same token again: the imported CryptoKey is reused (no new importKey).
    again = await verify(api, token, keys.jwks(), algorithms=[alg])
    assert again.status_code == 200, again.text
    assert again.json()["key_imports"] == data["key_imports"]


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "ES384", "EdDSA", "HS256"])
async def test_tampered_signature_is_401(api: httpx.AsyncClient, keys: Keys, alg: str) -> None:
    token = _flip_signature(keys.signers[alg].mint())
    assert_refused(await verify(api, token, keys.jwks()), "signature")


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
async def test_tampered_claims_are_401(api: httpx.AsyncClient, keys: Keys, alg: str) -> None:
    head, _, sig = keys.signers[alg].mint().split(".")
    now = int(time.time())
    forged = {"iss": ISSUER, "aud": AUDIENCE, "sub": "admin", "iat": now, "exp": now + 300}
    payload = b64url_encode(json.dumps(forged).encode())
    assert_refused(await verify(api, f"{head}.{payload}.{sig}", keys.jwks()), "signature")


async def test_wrong_key_is_401(api: httpx.AsyncClient, keys: Keys) -> None:
    # Signed by another RSA key under the published kid.
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 300}
    for alg in ("RS256", "PS256"):
        token = pyjwt.encode(claims, keys.other_rsa, algorithm=alg, headers={"kid": f"{alg.lower()}-1"})
        assert_refused(await verify(api, token, keys.jwks()), "signature")
    other_ec = ec.generate_private_key(ec.SECP256R1())
    token = pyjwt.encode(claims, other_ec, algorithm="ES256", headers={"kid": "es256-1"})
    assert_refused(await verify(api, token, keys.jwks()), "signature")


async def test_alg_none_and_confusion_are_401(api: httpx.AsyncClient, keys: Keys) -> None:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 300}
    for alg in ("none", "None", "NONE"):
        head = b64url_encode(json.dumps({"alg": alg, "kid": "rs256-1"}).encode())
        body = b64url_encode(json.dumps(claims).encode())
        assert_refused(await verify(api, f"{head}.{body}.", keys.jwks()), "malformed")
        assert_refused(await verify(api, f"{head}.{body}.AAAA", keys.jwks()), "algorithm")
    # HS256 "signed" with the RSA public JWK's modulus / the published JSON as secret.
    rsa_jwk = keys.signers["RS256"].public_jwk
    for secret in (json.dumps(rsa_jwk).encode(), b64url_decode(rsa_jwk["n"])):
        token = _hs256(claims, secret, {"alg": "HS256", "kid": "rs256-1"})  # PyJWT refuses to
        assert_refused(await verify(api, token, keys.jwks("RS256")), "algorithm")
    # An algorithm outside the caller's allow-list.
    token = keys.signers["ES256"].mint()
    assert_refused(await verify(api, token, keys.jwks(), algorithms=["RS256"]), "algorithm")


async def test_der_encoded_ecdsa_signature_is_401(api: httpx.AsyncClient, keys: Keys) -> None:
    head, body, sig = keys.signers["ES256"].mint().split(".")
    raw = b64url_decode(sig)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    assert_refused(await verify(api, f"{head}.{body}.{b64url_encode(der)}", keys.jwks()), "signature")


async def test_claims_are_checked(api: httpx.AsyncClient, keys: Keys) -> None:
    signer = keys.signers["ES256"]
    now = int(time.time())
    assert_refused(await verify(api, signer.mint({"exp": now - 3600}), keys.jwks()), "expired")
    assert_refused(await verify(api, signer.mint({"nbf": now + 3600}), keys.jwks()), "not_yet_valid")
    assert_refused(await verify(api, signer.mint({"iss": "https://evil.example"}), keys.jwks()), "issuer")
    assert_refused(await verify(api, signer.mint({"aud": "someone-else"}), keys.jwks()), "audience")
    # Within the leeway an expired token still passes; with leeway 0 it does not.
    recent = signer.mint({"exp": now - 5})
    assert (await verify(api, recent, keys.jwks())).status_code == 200
    assert_refused(await verify(api, recent, keys.jwks(), leeway_s=0), "expired")


async def test_unknown_kid_and_garbage_are_401_never_500(api: httpx.AsyncClient, keys: Keys) -> None:
    token = keys.signers["RS256"].mint(kid="nope")
    assert_refused(await verify(api, token, keys.jwks()), "key")
    for garbage in ("", "a.b", "a.b.c", "x" * 9000, "eyJhbGciOiJSUzI1NiJ9.e30.AAAA", "...", "a.b.c.d.e"):
        r = await verify(api, garbage, keys.jwks())
        assert r.status_code == 401, (garbage[:40], r.text)


async def test_bad_requests_are_400(api: httpx.AsyncClient, keys: Keys) -> None:
    token = keys.signers["RS256"].mint()
    assert (await api.post("/__jwt/verify", json={"jwks": keys.jwks()})).status_code == 400
    assert (await verify(api, token, {"keys": []})).status_code == 400
    assert (await verify(api, token, {"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]})).status_code == 400
    assert (await verify(api, token)).status_code == 400  # neither jwks nor jwks_uri


async def test_route_absent_without_the_test_configuration(client: httpx.AsyncClient, keys: Keys) -> None:
    r = await client.post("/__jwt/verify", json={"token": "x", "jwks": keys.jwks()})
    assert r.status_code == 404


# --------------------------------------------------------------------------------------
# jwks_uri: the isolate's JWKS cache, fetched through the runtime's fetch
# --------------------------------------------------------------------------------------


@dataclass
class Doc:
    jwks: dict[str, Any]
    cache_control: str = "max-age=300"
    status: int = 200
    hits: int = 0


class JwksServer:
    """JWKS documents by path, served on 127.0.0.1 from a thread; counts requests."""

    def __init__(self) -> None:
        self.docs: dict[str, Doc] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                doc = server.docs.get(self.path)
                if doc is None:
                    self.send_error(404)
                    return
                doc.hits += 1
                payload = json.dumps(doc.jwks).encode() if doc.status == 200 else b"down"
                self.send_response(doc.status)
                self.send_header("content-type", "application/json")
                self.send_header("cache-control", doc.cache_control)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, jwks: dict[str, Any], **kw: Any) -> tuple[str, Doc]:
        path = f"/{uuid.uuid4().hex}/jwks.json"
        self.docs[path] = Doc(jwks, **kw)
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}", self.docs[path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


async def via_uri(api: httpx.AsyncClient, token: str, uri: str) -> httpx.Response:
    return await api.post(
        "/__jwt/verify", json={"token": token, "jwks_uri": uri, "issuer": ISSUER, "audience": AUDIENCE}
    )


@pytest.mark.host_only
async def test_jwks_uri_is_fetched_once_while_fresh(
    api: httpx.AsyncClient, keys: Keys, jwks_server: JwksServer
) -> None:
    uri, doc = jwks_server.publish(keys.jwks("RS256", "ES256", "EdDSA"))
    for alg in ("RS256", "ES256", "EdDSA", "RS256"):
        r = await via_uri(api, keys.signers[alg].mint(), uri)
        assert r.status_code == 200, r.text
        assert r.json()["jwks"]["fetches"] == 1
    assert doc.hits == 1


@pytest.mark.host_only
async def test_unknown_kid_flood_refetches_at_most_once(
    api: httpx.AsyncClient, keys: Keys, jwks_server: JwksServer
) -> None:
    uri, doc = jwks_server.publish(keys.jwks("ES256"))
    assert (await via_uri(api, keys.signers["ES256"].mint(), uri)).status_code == 200
    tokens = [keys.signers["ES256"].mint(kid=uuid.uuid4().hex) for _ in range(25)]
    replies = await asyncio.gather(*(via_uri(api, t, uri) for t in tokens))
    for r in replies:
        assert_refused(r, "key")
    assert doc.hits == 2  # the first fetch + one refetch for the whole flood
    # The known key still verifies, from the cache.
    assert (await via_uri(api, keys.signers["ES256"].mint(), uri)).status_code == 200
    assert doc.hits == 2


@pytest.mark.host_only
async def test_rotation_new_kid_is_fetched_old_key_kept_through_grace(
    api: httpx.AsyncClient, keys: Keys, jwks_server: JwksServer
) -> None:
    old = keys.signers["ES256"]
    uri, doc = jwks_server.publish(keys.jwks("ES256"))
    old_token = old.mint()
    assert (await via_uri(api, old_token, uri)).status_code == 200
    # The issuer rotates: the JWKS now holds only a new key.
    new_private = ec.generate_private_key(ec.SECP256R1())
    new = Signer("ES256", "es256-2", new_private, _public_jwk("ES256", "es256-2", new_private))
    doc.jwks = {"keys": [new.public_jwk]}
    r = await via_uri(api, new.mint(), uri)  # unknown kid → one refetch → verifies
    assert r.status_code == 200, r.text
    assert doc.hits == 2
    # The old key left the JWKS but stays accepted through the rotation window.
    assert (await via_uri(api, old_token, uri)).status_code == 200
    assert doc.hits == 2


@pytest.mark.host_only
async def test_dead_endpoint_does_not_fail_cached_keys(
    api: httpx.AsyncClient, keys: Keys, jwks_server: JwksServer
) -> None:
    uri, doc = jwks_server.publish(keys.jwks("RS256"), cache_control="max-age=1")
    token = keys.signers["RS256"].mint()
    assert (await via_uri(api, token, uri)).status_code == 200
    doc.status = 500
    await asyncio.sleep(1.2)  # the entry expires (max-age=1); the refetch fails
    r = await via_uri(api, token, uri)
    assert r.status_code == 200, r.text
    stats = r.json()["jwks"]
    assert stats["fetches"] == 2 and stats["failures"] == 1 and "500" in stats["last_error"]
    assert doc.hits == 2


@pytest.mark.host_only
async def test_cold_dead_endpoint_is_503(api: httpx.AsyncClient, keys: Keys, jwks_server: JwksServer) -> None:
    uri, doc = jwks_server.publish(keys.jwks("RS256"), status=503)
    r = await via_uri(api, keys.signers["RS256"].mint(), uri)
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "jwks_unavailable"
    # Within the failure back-off the endpoint is not asked again.
    assert (await via_uri(api, keys.signers["RS256"].mint(), uri)).status_code == 503
    assert doc.hits == 1
    # Nothing listens here at all: also 503, not 500.
    r = await via_uri(api, keys.signers["RS256"].mint(), "http://127.0.0.1:9/jwks.json")
    assert r.status_code == 503, r.text
