"""Gateway routes whose issuers publish their keys at a ``jwks_uri``, through the real host.

The test serves the JWKS documents itself, over HTTPS on 127.0.0.1 (the gateway's JWKS
cache accepts only ``https`` URIs): a CA and a server certificate are made with
``cryptography`` and the host is started with ``NODE_EXTRA_CA_CERTS`` naming the CA, so
the Worker's ``fetch`` (Node's) trusts it. Keys are ES256 (P-256) from ``cryptography``,
tokens minted by PyJWT. Every JWKS request is counted per path at the server.

Shown: a valid token is 200 and the JWKS is fetched once while fresh; rotation mid-run
(the server switches to a new key: a token with the new ``kid`` verifies after the
unknown-``kid`` refetch, a token with the old ``kid`` still verifies within the rotation
grace); 1,000 tokens with random ``kid`` values cost the JWKS endpoint at most one fetch
per refetch interval (60 s by default); the endpoint answering 500, or not listening at
all, while keys are cached: valid tokens are still 200.

Each scenario has its own issuer (its own ``jwks_uri`` and route), so the isolate's
per-issuer cache state of one cannot leak into another. Not shown here: the expiry of the
cached keys while the endpoint is down (stale-if-error) needs the default policy's
``min_ttl_s`` of 60 s to pass; tests/http/test_jwt_edge.py shows it with the test route's
1 s policy and tests/edge/test_jwks_cache.py with a fake clock.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import socket
import ssl
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

pytestmark = pytest.mark.host_only

SIGNING = {"jwks-edge-1": "6b" * 32}
AUDIENCE = "jwks-api"
SCENARIOS = ("basic", "rotation", "flood", "down", "gone")
FLOOD = 1000
IN_FLIGHT = 16
REFETCH_INTERVAL_S = 60  # JwksCachePolicy.unknown_kid_interval_s (the gateway's default policy)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --------------------------------------------------------------------------------------
# keys and tokens
# --------------------------------------------------------------------------------------


@dataclass
class Signer:
    kid: str
    private: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    @property
    def jwk(self) -> dict[str, Any]:
        jwk = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        assert isinstance(jwk, dict)
        return {**jwk, "kid": self.kid, "alg": "ES256", "use": "sig"}

    def mint(self, scenario: str, sub: str = "user-1", kid: str | None = None) -> str:
        now = int(time.time())
        claims = {"iss": issuer(scenario), "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 600}
        return jwt.encode(claims, self.private, algorithm="ES256", headers={"kid": kid or self.kid})


def issuer(scenario: str) -> str:
    return f"https://id.{scenario}.test"


# --------------------------------------------------------------------------------------
# the HTTPS JWKS server (a CA, a certificate for 127.0.0.1) and the origin
# --------------------------------------------------------------------------------------


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) as PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-kv test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, cert_pem, key_pem = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_pem, cert_pem, key_pem


@dataclass
class Doc:
    jwks: dict[str, Any]
    cache_control: str = "max-age=300"
    status: int = 200
    hits: int = 0
    hit_times: list[float] = field(default_factory=list)


class JwksServer:
    """JWKS documents by path over HTTPS, from a thread; counts requests per path."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.docs: dict[str, Doc] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server.lock:
                    doc = server.docs.get(self.path)
                    if doc is not None:
                        doc.hits += 1
                        doc.hit_times.append(time.monotonic())
                if doc is None:
                    self.send_error(404)
                    return
                payload = json.dumps(doc.jwks).encode() if doc.status == 200 else b'{"error": "down"}'
                self.send_response(doc.status)
                self.send_header("content-type", "application/json")
                self.send_header("cache-control", doc.cache_control)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.closed = False

    @property
    def port(self) -> int:
        port: int = self.httpd.server_address[1]
        return port

    def uri(self, scenario: str) -> str:
        return f"https://127.0.0.1:{self.port}/{scenario}/jwks.json"

    def publish(self, scenario: str, *signers: Signer, **kw: Any) -> Doc:
        doc = Doc({"keys": [s.jwk for s in signers]}, **kw)
        with self.lock:
            self.docs[f"/{scenario}/jwks.json"] = doc
        return doc

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.httpd.shutdown()
            self.httpd.server_close()


def origin_app() -> Any:
    async def echo(request: Request) -> Response:
        return JSONResponse(
            {"subject": request.headers.get("x-edge-subject"), "issuer": request.headers.get("x-edge-issuer")}
        )

    return Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])])


class OriginServer:
    def __init__(self) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            origin_app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started, "the origin did not start"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


# --------------------------------------------------------------------------------------
# the host
# --------------------------------------------------------------------------------------


@dataclass
class World:
    url: str
    jwks: JwksServer  # serves every scenario but "gone"
    gone: JwksServer  # its own server, shut down by the test
    signers: dict[str, Signer]
    docs: dict[str, Doc]


def gateway_document(origin_url: str, uris: dict[str, str]) -> dict[str, Any]:
    return {
        "routes": [
            {"name": s, "prefix": f"/{s}/", "auth": [f"jwt:{s}"], "routing": "only", "timeout_ms": 5000}
            for s in SCENARIOS
        ],
        "issuers": {
            s: {"issuer": issuer(s), "audience": AUDIENCE, "jwks_uri": uris[s], "algorithms": ["ES256"]}
            for s in SCENARIOS
        },
        "routing": {
            "only": {
                "pools": {"p": {"strategy": "ordered", "origins": [{"name": "origin", "url": origin_url}]}},
                "default": {"pools": ["p"]},
            }
        },
    }


@pytest.fixture(scope="module")
def world(worker_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from hostproc import HostProcess

    directory = tmp_path_factory.mktemp("gateway-jwks")
    ca, cert, key = make_tls(directory)
    jwks, gone = JwksServer(cert, key), JwksServer(cert, key)
    signers = {s: Signer(f"{s}-1") for s in SCENARIOS}
    docs = {s: (gone if s == "gone" else jwks).publish(s, signers[s]) for s in SCENARIOS}
    uris = {s: (gone if s == "gone" else jwks).uri(s) for s in SCENARIOS}
    origin = OriginServer()
    origin.start()
    config = directory / "wrangler.toml"
    config.write_text(worker_config.read_text())
    doc = json.dumps(gateway_document(f"http://127.0.0.1:{origin.port}", uris), separators=(",", ":"))
    dev_vars = {
        "EDGE_KV_GATEWAY": doc,
        "EDGE_KV_SIGNING_KEYS": json.dumps(SIGNING),
        "EDGE_KV_GATEWAY_CACHE_S": "60",
    }
    (directory / ".dev.vars").write_text("".join(f"{k}='{v}'\n" for k, v in dev_vars.items()))
    host = HostProcess(config, tmp_path_factory.mktemp("gateway-jwks-persist"))
    try:
        with pytest.MonkeyPatch.context() as mp:  # the host (Node) trusts the test CA
            mp.setenv("NODE_EXTRA_CA_CERTS", str(ca))
            url = host.start()
        yield World(url, jwks, gone, signers, docs)
    finally:
        host.close()
        origin.stop()
        jwks.close()
        gone.close()


@pytest.fixture
async def gw(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=world.url, timeout=60) as c:
        yield c


async def call(gw: httpx.AsyncClient, scenario: str, token: str) -> httpx.Response:
    return await gw.get(f"/{scenario}/orders", headers={"authorization": f"Bearer {token}"})


def assert_ok(r: httpx.Response, scenario: str, sub: str = "user-1") -> None:
    assert r.status_code == 200, r.text
    assert r.json() == {"subject": sub, "issuer": issuer(scenario)}


def assert_refused(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert (
        r.headers["www-authenticate"].startswith("Bearer")
        and "invalid_token" in r.headers["www-authenticate"]
    )


# --------------------------------------------------------------------------------------
# the scenarios
# --------------------------------------------------------------------------------------


async def test_valid_token_is_200_and_the_jwks_is_fetched_once(gw: httpx.AsyncClient, world: World) -> None:
    signer, doc = world.signers["basic"], world.docs["basic"]
    assert_ok(await call(gw, "basic", signer.mint("basic")), "basic")
    assert doc.hits == 1
    for i in range(5):  # fresh: from the isolate's cache
        assert_ok(await call(gw, "basic", signer.mint("basic", sub=f"user-{i}")), "basic", f"user-{i}")
    assert doc.hits == 1
    # A token for this route signed by a key the issuer never published: 401.
    assert_refused(await call(gw, "basic", Signer("basic-1").mint("basic")))
    # Another issuer's token on this route: its iss does not match.
    assert_refused(await call(gw, "basic", world.signers["rotation"].mint("rotation", kid="basic-1")))
    assert doc.hits == 1


async def test_rotation_new_kid_after_refetch_old_kid_within_grace(
    gw: httpx.AsyncClient, world: World
) -> None:
    old, doc = world.signers["rotation"], world.docs["rotation"]
    old_token = old.mint("rotation", sub="before")
    assert_ok(await call(gw, "rotation", old_token), "rotation", "before")
    assert doc.hits == 1
    new = Signer("rotation-2")
    doc.jwks = {"keys": [new.jwk]}  # the issuer rotates: only the new key is published
    assert_ok(await call(gw, "rotation", new.mint("rotation", sub="after")), "rotation", "after")
    assert doc.hits == 2  # the unknown kid caused exactly one refetch
    # The old key left the document but stays accepted through the rotation grace (600 s).
    assert_ok(await call(gw, "rotation", old_token), "rotation", "before")
    assert_ok(await call(gw, "rotation", old.mint("rotation", sub="late")), "rotation", "late")
    assert_ok(await call(gw, "rotation", new.mint("rotation", sub="after-2")), "rotation", "after-2")
    assert doc.hits == 2


async def test_a_flood_of_random_kids_costs_one_fetch_per_interval(
    gw: httpx.AsyncClient, world: World
) -> None:
    signer, doc = world.signers["flood"], world.docs["flood"]
    assert_ok(await call(gw, "flood", signer.mint("flood")), "flood")
    assert doc.hits == 1
    tokens = [signer.mint("flood", kid=uuid.uuid4().hex) for _ in range(FLOOD)]
    statuses: dict[int, int] = {}
    bad: list[str] = []
    pending = iter(tokens)
    started = time.monotonic()

    async def worker() -> None:
        for token in pending:
            r = await call(gw, "flood", token)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code != 401 or "invalid_token" not in r.headers.get("www-authenticate", ""):
                bad.append(f"{r.status_code} {r.text[:200]}")

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    elapsed = time.monotonic() - started
    print(f"\nflood: {FLOOD} random kids in {elapsed:.1f}s, statuses={statuses}, JWKS fetches={doc.hits}")
    assert not bad, bad[:5]
    refetches = doc.hits - 1
    assert 1 <= refetches <= 1 + int(elapsed // REFETCH_INTERVAL_S), (refetches, elapsed)
    # Consecutive refetches are at least one interval apart.
    gaps = [b - a for a, b in zip(doc.hit_times[1:], doc.hit_times[2:], strict=False)]
    assert all(g >= REFETCH_INTERVAL_S - 1 for g in gaps), gaps
    # The real key still verifies, from the cache.
    hits = doc.hits
    assert_ok(await call(gw, "flood", signer.mint("flood", sub="after")), "flood", "after")
    assert doc.hits == hits


async def test_endpoint_failing_with_keys_cached_is_still_200(gw: httpx.AsyncClient, world: World) -> None:
    signer, doc = world.signers["down"], world.docs["down"]
    assert_ok(await call(gw, "down", signer.mint("down")), "down")
    assert doc.hits == 1
    doc.status = 500  # the endpoint fails from now on
    # An unknown kid makes the cache try the endpoint: the refetch fails, the token is 401
    # (not 500, not 503: the issuer's cached keys are usable, this kid is just not among them).
    assert_refused(await call(gw, "down", signer.mint("down", kid="down-unknown")))
    assert doc.hits == 2
    for i in range(3):  # the cached key keeps verifying
        assert_ok(await call(gw, "down", signer.mint("down", sub=f"still-{i}")), "down", f"still-{i}")
    assert doc.hits == 2  # and the failing endpoint is not asked again within the back-off


async def test_endpoint_gone_with_keys_cached_is_still_200(gw: httpx.AsyncClient, world: World) -> None:
    signer, doc = world.signers["gone"], world.docs["gone"]
    assert_ok(await call(gw, "gone", signer.mint("gone")), "gone")
    assert doc.hits == 1
    world.gone.close()  # nothing listens on that port any more
    assert_refused(await call(gw, "gone", signer.mint("gone", kid="gone-unknown")))
    for i in range(3):
        assert_ok(await call(gw, "gone", signer.mint("gone", sub=f"still-{i}")), "gone", f"still-{i}")
    assert doc.hits == 1
