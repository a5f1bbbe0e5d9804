"""Malformed credentials against a JWT + API-key protected gateway route, through the host.

At least 10,000 generated requests (``EDGE_KV_PROPERTY_EXAMPLES``, default 10000) carry
broken ``Authorization`` / ``X-Api-Key`` headers: random base64url segments, wrong segment
counts, tokens past the size limit (up to 40 KB; the host runs with
``--max-header-bytes 65536`` so they reach the Worker rather than the host's 431), non-ASCII
bytes, JSON headers with odd ``alg``/``crit``/``kid``/``b64``/``zip``/``enc``, duplicated
members, claims of the wrong types, tokens signed with the wrong key (HMAC, and random
RS256/ES256/EdDSA signatures that go through WebCrypto), properly signed tokens with bad
claims, garbage schemes, API keys that are garbage, near misses of a real key or very long,
and duplicated headers. Every answer must be 400 or 401 with an RFC 9457
``application/problem+json`` body (401s with a ``Bearer`` challenge), never a 5xx, nothing
may reach the origin, the Worker must log no traceback, and ``GET /__health`` still
answers 200 afterwards.

Throughput is the host's (one Pyodide, ~70-150 requests/s on the shared 2-core machine,
16 in flight over keep-alive connections): 10,000 requests take 70-150 s there; set
``EDGE_KV_PROPERTY_EXAMPLES`` lower for a quick run.

The cases come from a seeded :class:`random.Random` (``EDGE_KV_FUZZ_SEED``, printed in
every failure message together with the case number, so ``EDGE_KV_FUZZ_SEED=<seed>``
replays the run exactly). Hypothesis is not the driver for the bulk run: its engine runs
examples one after the other and caps each example's entropy at 8 KiB, which fits neither
16 requests in flight nor 40 KB tokens. A shorter Hypothesis property (sequential, with
shrinking) covers the same header shapes from strategies.

A token whose ``kid``/``alg``/``crit`` holds a character above U+00FF was once answered
500 (the refusal detail quoting it went into ``WWW-Authenticate`` unfiltered); the test
``test_non_latin1_header_members_are_refused_cleanly`` keeps it fixed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import random
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

pytestmark = pytest.mark.host_only

EXAMPLES = int(os.environ.get("EDGE_KV_PROPERTY_EXAMPLES", "10000"))
SEED = int(os.environ.get("EDGE_KV_FUZZ_SEED", "20261122"))
IN_FLIGHT = 16
HOSTS = int(os.environ.get("EDGE_KV_FUZZ_HOSTS", "1"))
SIGNING = {"fuzz-edge-1": "5a" * 32}
HS_SECRET = b"gateway-fuzz-secret-for-hs256-at-least-32-bytes"
ISSUER = "https://id.fuzz.test"
AUDIENCE = "fuzz-api"
SERVICE_TOKEN = "gateway-fuzz-service-token"
VALID_API_KEY = "pk_fuzz_valid_0123456789"
ORIGIN_HITS: list[str] = []

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
OTHER_EC_KEY = ec.generate_private_key(ec.SECP256R1())


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _jwk(jwk: Any, kid: str, alg: str) -> dict[str, Any]:
    assert isinstance(jwk, dict)
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


JWKS = {
    "keys": [
        {"kty": "oct", "kid": "hs-1", "alg": "HS256", "k": b64e(HS_SECRET)},
        _jwk(RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True), "rs-1", "RS256"),
        _jwk(ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True), "es-1", "ES256"),
        _jwk(OKPAlgorithm.to_jwk(ED_KEY.public_key(), as_dict=True), "ed-1", "EdDSA"),
    ]
}


# --------------------------------------------------------------------------------------
# the host with a gateway document, one origin that counts what reaches it
# --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def origin_app() -> Any:
    async def echo(request: Request) -> Response:
        ORIGIN_HITS.append(request.headers.get("x-edge-subject", ""))
        return JSONResponse({"subject": request.headers.get("x-edge-subject")})

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


def gateway_document(origin_url: str) -> dict[str, Any]:
    return {
        "routes": [
            {
                "name": "fuzz",
                "prefix": "/api/",
                "methods": ["GET", "POST"],
                "auth": ["jwt:main", "api_key"],
                "routing": "only",
                "timeout_ms": 5000,
            }
        ],
        "issuers": {"main": {"issuer": ISSUER, "audience": AUDIENCE, "jwks": JWKS}},
        "routing": {
            "only": {
                "pools": {"p": {"strategy": "ordered", "origins": [{"name": "origin", "url": origin_url}]}},
                "default": {"pools": ["p"]},
            }
        },
    }


@dataclass
class Gateway:
    hosts: list[Any]  # hostproc.HostProcess, each serving the same Worker and document
    urls: list[str]

    @property
    def url(self) -> str:
        return self.urls[0]


@pytest.fixture(scope="module")
def gateway(worker_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """``HOSTS`` hosts (``EDGE_KV_FUZZ_HOSTS``, default 1; each runs one Pyodide, so on an
    idle multi-core machine more hosts answer more per second, on a busy one they do not)
    with the gateway document, the same origin, one valid API key each."""
    from hostproc import HostProcess

    from edge_kv.edge.auth import api_key_kv_key

    origin = OriginServer()
    origin.start()
    directory = tmp_path_factory.mktemp("gateway-fuzz")
    config = directory / "wrangler.toml"
    config.write_text(worker_config.read_text())
    doc = json.dumps(gateway_document(f"http://127.0.0.1:{origin.port}"), separators=(",", ":"))
    dev_vars = {
        "EDGE_KV_GATEWAY": doc,
        "EDGE_KV_SIGNING_KEYS": json.dumps(SIGNING),
        "EDGE_KV_SERVICE_TOKEN": SERVICE_TOKEN,
        "EDGE_KV_GATEWAY_CACHE_S": "60",
    }
    (directory / ".dev.vars").write_text("".join(f"{k}='{v}'\n" for k, v in dev_vars.items()))
    hosts = [
        HostProcess(config, tmp_path_factory.mktemp("gateway-fuzz-persist"), "--max-header-bytes", "65536")
        for _ in range(HOSTS)
    ]
    try:
        with ThreadPoolExecutor(len(hosts)) as pool:
            urls = list(pool.map(lambda h: h.start(), hosts))
        record = json.dumps({"subject": "partner-fuzz", "scopes": []})
        for url in urls:  # one API key that works, so near misses of it are meaningful
            r = httpx.put(
                f"{url}/admin/kv/{api_key_kv_key(VALID_API_KEY)}",
                json={"value": record},
                headers={"authorization": f"Bearer {SERVICE_TOKEN}"},
                timeout=30,
            )
            assert r.status_code == 200, r.text
        yield Gateway(hosts, urls)
    finally:
        for host in hosts:
            host.close()
        origin.stop()


def valid_token(**claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "fuzz-user", "iat": now, "exp": now + 600, **claims}
    return jwt.encode(body, HS_SECRET, algorithm="HS256", headers={"kid": "hs-1"})


def compact(header: dict[str, Any], claims: Any, alg: str, key: Any) -> str:
    """A compact JWS signed here (PyJWT refuses to sign the odd claims the fuzz needs)."""
    signing_input = f"{b64e(json.dumps(header).encode())}.{b64e(json.dumps(claims).encode())}"
    if alg == "HS256":
        signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    else:
        r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signing_input}.{b64e(signature)}"


# --------------------------------------------------------------------------------------
# the generator: one case = a method, a list of raw header fields, and what it is
# --------------------------------------------------------------------------------------

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))
NOT_B64URL = "+/=!*~ .%$#@\\\"'`{}[]<>,;:"
NON_ASCII = ["é", "ß", "漢字", "🔑", "\u00a0", "\u200b", "\ufeff", "Ω", "ü"]
ODD_ALGS: list[Any] = [
    "none", "None", "NONE", "nOnE", " none", "HS256 ", "hs256", "HS999", "RS1", "ES256K", "PS256",
    "EdDSA", "Ed25519", "RS256", "ES256", "HS256", "HS384", "HS512", "RSA-OAEP", "dir", "A128KW",
    "", None, 0, 1, True, [], ["HS256"], {}, {"alg": "HS256"}, "HS256\u0000", "\u00e9", "x" * 300,
]  # fmt: skip
ODD_CRIT: list[Any] = [
    [],
    ["b64"],
    ["exp"],
    ["kid"],
    ["x"],
    ["x", "x"],
    "b64",
    [1],
    [None],
    {},
    True,
    ["alg"],
]
ODD_KIDS: list[Any] = [
    None, "", "hs-1", "rs-1", "es-1", "ed-1", "HS-1", "hs-1 ", "../../etc/passwd", "'; drop table keys;--",
    "k" * 5000, "\u00e9t\u00e9", 1, 1.5, True, [], ["hs-1"], {}, "\u0000", "%00", "${jndi:ldap://x}",
]  # fmt: skip
ODD_B64: list[Any] = [False, True, "false", 0, 1, None, [], "b64"]
ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1.5, 2**63, -(2**64), 1e308, "", "x", "1700000000", [], [1], {}, {"a": {"b": []}},
    "\u0000", "é",
]  # fmt: skip


@dataclass(frozen=True)
class Case:
    index: int
    kind: str
    method: str
    headers: list[tuple[bytes, bytes]]

    def describe(self) -> str:
        shown = [(n.decode(), v[:160].decode("latin-1") + (f"...(+{len(v) - 160})" if len(v) > 160 else ""))
                 for n, v in self.headers]  # fmt: skip
        return f"seed={SEED} case={self.index} kind={self.kind} method={self.method} headers={shown}"


class Fuzz:
    """Malformed credentials from one seeded ``random.Random``."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    # -- pieces -----------------------------------------------------------------------

    def chars(self, alphabet: str, lo: int, hi: int) -> str:
        return "".join(self.r.choices(alphabet, k=self.r.randint(lo, hi)))

    def segment(self) -> str:
        roll = self.r.random()
        if roll < 0.6:
            return self.chars(B64URL, 0, 120)
        if roll < 0.8:
            return b64e(self.r.randbytes(self.r.randint(0, 90)))
        if roll < 0.9:  # not strict base64url: padding, '+', '/', spaces, a lone char
            s = list(self.chars(B64URL, 1, 60))
            s.insert(self.r.randint(0, len(s)), self.r.choice(NOT_B64URL))
            return "".join(s)
        return self.chars(B64URL, 1, 1) * self.r.choice([1, 5, 9])  # length 1 mod 4: impossible

    def json_segment(self, value: Any) -> str:
        return b64e(json.dumps(value).encode())

    def raw_json_segment(self) -> str:
        """JSON text the core must refuse or survive: duplicates, NaN, depth, non-objects."""
        texts = [
            '{"alg":"HS256","alg":"none"}',
            '{"alg":"HS256","kid":"hs-1","kid":"rs-1"}',
            '{"alg":NaN}',
            '{"alg":"HS256","exp":Infinity}',
            "[" * 200 + "]" * 200,
            '{"a":' * 100 + "1" + "}" * 100,
            '"HS256"',
            "[]",
            "null",
            "123",
            '{"alg":"HS256"',
            '{"alg":"HS256"}garbage',
            '{"alg":"\\ud800"}',
            "{}",
            '{"alg":"HS256","kid":"hs-1"}\x00',
        ]
        text = self.r.choice(texts).encode()
        if self.r.random() < 0.2:
            text = self.r.randbytes(self.r.randint(1, 40))  # not UTF-8 at all
        return b64e(text)

    def odd_header(self) -> dict[str, Any]:
        h: dict[str, Any] = {}
        if self.r.random() < 0.9:
            h["alg"] = self.r.choice(ODD_ALGS)
        if self.r.random() < 0.5:
            h["kid"] = self.r.choice(ODD_KIDS)
        if self.r.random() < 0.3:
            h["crit"] = self.r.choice(ODD_CRIT)
            if self.r.random() < 0.5:
                h["b64"] = self.r.choice(ODD_B64)
        if self.r.random() < 0.2:
            h["b64"] = self.r.choice(ODD_B64)
        if self.r.random() < 0.1:
            h[self.r.choice(["zip", "enc", "typ", "cty", "jku", "x5u", "jwk", "x5c"])] = self.r.choice(
                ODD_VALUES
            )
        return h

    def claims(self, broken: bool) -> dict[str, Any]:
        now = int(time.time())
        c: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "fuzz", "iat": now, "exp": now + 600}
        if broken:  # at least one claim that makes a correctly signed token invalid
            name, value = self.r.choice(
                [
                    ("exp", now - 3600),
                    ("exp", self.r.choice([v for v in ODD_VALUES if not _future_date(v)])),
                    ("nbf", now + 3600),
                    ("iat", now + 7200),
                    ("aud", self.r.choice(["other", ["other"], [], 1, ["fuzz-api", 1]])),
                    ("iss", self.r.choice(["https://evil.test", 1, None, ""])),
                    ("sub", self.r.choice([1, [], {}, True])),
                ]
            )
            if name == "exp" and value is None:
                value = "soon"
            c[name] = value
            if self.r.random() < 0.3:
                del c["exp"]
        else:
            for _ in range(self.r.randint(0, 3)):
                c[self.chars(B64URL, 1, 12)] = self.r.choice(ODD_VALUES)
        return c

    def signature_for(self, alg: Any) -> str:
        sizes = {"RS256": 256, "ES256": 64, "EdDSA": 64, "HS256": 32}
        size = sizes.get(alg, 32) if isinstance(alg, str) else 32
        if self.r.random() < 0.3:
            size = self.r.choice([0, 1, size - 1, size + 1, 2 * size, 512])
        return b64e(self.r.randbytes(max(size, 0)))

    # -- tokens -----------------------------------------------------------------------

    def token(self) -> tuple[str, str]:
        kind = self.r.choice(
            [
                "random-segments",
                "segment-count",
                "odd-header",
                "odd-header",
                "raw-json",
                "wrong-key",
                "random-signature",
                "bad-claims",
                "huge",
                "non-ascii",
                "mangled-valid",
            ]
        )
        r = self.r
        if kind == "random-segments":
            return kind, ".".join(self.segment() for _ in range(3))
        if kind == "segment-count":
            n = r.choice([0, 1, 2, 4, 5, 6, 9])
            parts = [self.json_segment({"alg": "HS256", "kid": "hs-1"})] + [
                self.segment() for _ in range(n - 1)
            ]
            return kind, ".".join(parts[:n]) if n else r.choice(["", ".", "..", "...."])
        if kind == "odd-header":
            head = self.json_segment(self.odd_header())
            return (
                kind,
                f"{head}.{self.json_segment(self.claims(r.random() < 0.5))}.{self.signature_for('HS256')}",
            )
        if kind == "raw-json":
            good_head = self.json_segment({"alg": "HS256", "kid": "hs-1"})
            if r.random() < 0.5:
                return (
                    kind,
                    f"{self.raw_json_segment()}.{self.json_segment(self.claims(False))}.{self.segment()}",
                )
            return kind, f"{good_head}.{self.raw_json_segment()}.{self.signature_for('HS256')}"
        if kind == "wrong-key":
            claims = self.claims(r.random() < 0.3)
            alg = r.choice(["HS256", "ES256"])
            if alg == "HS256":
                header = r.choice([{"alg": "HS256", "kid": "hs-1"}, {"alg": "HS256"}])
                return kind, compact(header, claims, "HS256", r.randbytes(r.randint(32, 64)))
            return kind, compact({"alg": "ES256", "kid": "es-1"}, claims, "ES256", OTHER_EC_KEY)
        if kind == "random-signature":  # well-formed, known kid, random bytes: WebCrypto says no
            alg, kid = r.choice([("RS256", "rs-1"), ("ES256", "es-1"), ("EdDSA", "ed-1"), ("HS256", "hs-1")])
            head = self.json_segment({"alg": alg, "kid": kid, "typ": "JWT"})
            return kind, f"{head}.{self.json_segment(self.claims(False))}.{self.signature_for(alg)}"
        if kind == "bad-claims":  # correctly signed with the real key, claims invalid
            return kind, compact({"alg": "HS256", "kid": "hs-1"}, self.claims(True), "HS256", HS_SECRET)
        if kind == "huge":
            size = r.choice([8193, 8500, r.randint(8193, 40_000)])
            head = self.json_segment({"alg": "HS256", "kid": "hs-1"})
            filler = self.chars(B64URL, size, size)
            return kind, f"{head}.{filler}.{self.signature_for('HS256')}"
        if kind == "non-ascii":
            parts = [self.segment() or "e30", self.segment() or "e30", self.segment() or "AAAA"]
            i = r.randrange(3)
            pos = r.randint(0, len(parts[i]))
            parts[i] = parts[i][:pos] + r.choice(NON_ASCII) + parts[i][pos:]
            return kind, ".".join(parts)
        # mangled-valid: a valid token with one character changed, cut, or doubled
        token = valid_token()
        how = r.randrange(4)
        pos = r.randrange(len(token))
        if how == 0:
            replacement = r.choice(B64URL.replace(token[pos], ""))
            token = token[:pos] + replacement + token[pos + 1 :]
        elif how == 1:
            token = token[: r.randrange(1, len(token) - 1)]
        elif how == 2:
            token = token + "." + token
        else:
            token = token[:pos] + r.choice(NOT_B64URL + "é") + token[pos:]
        if _verifies(token):
            token = token + "!"
        return kind, token

    # -- header fields ----------------------------------------------------------------

    def authorization(self) -> tuple[str, str]:
        kind, token = self.token()
        roll = self.r.random()
        if roll < 0.75:
            scheme = self.r.choice(["Bearer", "Bearer", "bearer", "BEARER"])
            return f"jwt:{kind}", f"{scheme} {token}"
        if roll < 0.9:
            scheme = self.r.choice(
                ["Basic", "Token", "Digest", "Negotiate", "JWT", "Bearer:", "Bearer\t", "Bearer,", "OAuth", "Bearer=",
                 "Bearer Bearer", "", "Bear", "Bearerx"]
            )  # fmt: skip
            sep = self.r.choice([" ", "  ", "", "\t"])
            return f"scheme:{kind}", f"{scheme}{sep}{token}".strip(" \t") or "Bearer"
        bare = ["Bearer", "Bearer ", "bearer", "Basic dXNlcjpwYXNz", "Bearer a b", "Bearer a.b.c d", ",", "x"]
        return "scheme:bare", self.r.choice([*bare, self.chars(PRINTABLE, 1, 80)])

    def api_key(self) -> tuple[str, str]:
        r = self.r
        roll = r.random()
        if roll < 0.3:
            return "key:random", self.chars(PRINTABLE, 1, 200)
        if roll < 0.5:
            return "key:long", self.chars(B64URL, 257, r.choice([300, 4000, 30_000]))
        if roll < 0.65:  # near misses of the real key
            k = VALID_API_KEY
            pos = r.randrange(len(k))
            return "key:near-miss", r.choice(
                [k.upper(), k[:-1], k + "0", k[:pos] + "x" + k[pos + 1 :], f"{k},{k}", f"{k} {k}", k[::-1]]
            )
        if roll < 0.8:
            s = self.chars(B64URL, 0, 40)
            return "key:non-ascii", s + r.choice(NON_ASCII) + self.chars(B64URL, 0, 40)
        return "key:odd", r.choice(
            ["null", "undefined", "0", "[]", "{}", "*", "%00", "' OR 1=1 --", "apikey:", "k" * 256 + "x"]
        )

    def case(self, index: int) -> Case:
        r = self.r
        headers: list[tuple[str, str]] = []
        kinds: list[str] = []
        shape = r.random()
        if shape < 0.55:  # one Authorization header
            kind, value = self.authorization()
            headers.append(("authorization", value))
            kinds.append(kind)
        elif shape < 0.75:  # one X-Api-Key header
            kind, value = self.api_key()
            headers.append(("x-api-key", value))
            kinds.append(kind)
        elif shape < 0.85:  # both, garbage
            for name, (kind, value) in (
                ("authorization", self.authorization()),
                ("x-api-key", self.api_key()),
            ):
                headers.append((name, value))
                kinds.append(kind)
        else:  # duplicated headers, possibly with a valid credential among garbage
            name = r.choice(["authorization", "x-api-key"])
            for _ in range(r.randint(2, 4)):
                if name == "authorization":
                    kind, value = r.choice([self.authorization(), ("jwt:valid", f"Bearer {valid_token()}")])
                else:
                    kind, value = r.choice([self.api_key(), ("key:valid", VALID_API_KEY)])
                headers.append((name, value))
                kinds.append(kind)
            kinds.insert(0, "duplicated")
            if all(k in ("jwt:valid", "key:valid") for k in kinds[1:]):
                headers.append((name, "garbage"))  # two valid copies must still be refused; keep one garbage
        if r.random() < 0.1:
            headers.append(("authorization", ""))
        raw = [(n.encode(), v.encode("utf-8")) for n, v in headers]
        if r.random() < 0.05:  # Latin-1 bytes that are not UTF-8
            raw = [(n, v + bytes([r.randint(0x80, 0xFF)])) for n, v in raw]
        method = r.choice(["GET", "GET", "POST"])
        return Case(index, "+".join(kinds), method, raw)


def _future_date(value: Any) -> bool:
    """A value the core accepts as a NumericDate still in the future (``2**63``, ``1e308``)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > time.time()


def _verifies(token: str) -> bool:
    try:
        jwt.decode(token, HS_SECRET, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER)
    except Exception:
        return False
    return True


# --------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names; repeated fields joined with ", "
    body: bytes


class Connection:
    """One keep-alive HTTP/1.1 connection, as lean as possible: at ~100+ requests/s the
    client's own CPU matters on a shared 2-core machine (httpx costs about as much per
    request as the host does). Raw bytes go out as given (httpx/h11 would refuse some of
    the header values under test before sending them)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes | None = None
    ) -> Answer:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        assert self.reader is not None
        out = [f"{method} {target} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n".encode()]
        out += [name + b": " + value + b"\r\n" for name, value in headers]
        if body is not None:
            out.append(b"content-length: %d\r\n" % len(body))
        out.append(b"\r\n" + (body or b""))
        self.writer.write(b"".join(out))
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        fields: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            fields[name] = f"{fields[name]}, {value}" if name in fields else value
        status = int(status_line.split(" ", 2)[1])
        if method == "HEAD" or status in (204, 304):
            data = b""
        elif "content-length" in fields:
            data = await self.reader.readexactly(int(fields["content-length"]))
        elif "chunked" in fields.get("transfer-encoding", "").lower():
            parts = []
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            await self.reader.readuntil(b"\r\n")
            data = b"".join(parts)
        else:
            data = await self.reader.read()
            await self.close()
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return Answer(status, fields, data)


def refusal_problem(status: int, headers: Mapping[str, str], body: bytes) -> str | None:
    """Why an answer is not an acceptable refusal (``None`` when it is one)."""
    text = body[:300].decode("utf-8", "replace")
    if status not in (400, 401):
        return f"status {status}: {text}"
    if not headers.get("content-type", "").startswith("application/problem+json"):
        return f"content-type {headers.get('content-type')!r}: {text}"
    try:
        problem = json.loads(body)
    except ValueError:
        return f"not JSON: {text}"
    if not isinstance(problem, dict) or problem.get("status") != status:
        return f"problem body without the status: {text}"
    if status == 401 and not headers.get("www-authenticate", "").startswith("Bearer"):
        return f"401 without a Bearer challenge: {headers.get('www-authenticate')!r}"
    return None


def test_sanity_the_route_accepts_real_credentials(gateway: Gateway) -> None:
    """Without this the 401s below would prove nothing: real credentials pass."""
    for url in gateway.urls:
        with httpx.Client(base_url=url, timeout=30) as c:
            r = c.get("/api/sanity", headers={"authorization": f"Bearer {valid_token()}"})
            assert r.status_code == 200 and r.json()["subject"] == "fuzz-user", r.text
            r = c.get("/api/sanity", headers={"x-api-key": VALID_API_KEY})
            assert r.status_code == 200 and r.json()["subject"] == "partner-fuzz", r.text
            for alg, key, kid in (
                ("RS256", RSA_KEY, "rs-1"),
                ("ES256", EC_KEY, "es-1"),
                ("EdDSA", ED_KEY, "ed-1"),
            ):
                now = int(time.time())
                claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": f"fuzz-{alg}", "exp": now + 600}
                token = jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})
                r = c.get("/api/sanity", headers={"authorization": f"Bearer {token}"})
                assert r.status_code == 200 and r.json()["subject"] == f"fuzz-{alg}", r.text
    ORIGIN_HITS.clear()


async def test_ten_thousand_malformed_credentials_are_refused_cleanly(
    gateway: Gateway, tmp_path: Path
) -> None:
    fuzz = Fuzz(SEED)
    cases = [fuzz.case(i) for i in range(EXAMPLES)]
    assert len({(c.method, tuple(c.headers)) for c in cases}) > 0.8 * len(cases), (
        "the generator repeats itself"
    )
    kinds: dict[str, int] = {}
    for case in cases:
        first = case.kind.split("+")[0]
        kinds[first] = kinds.get(first, 0) + 1
    failures: list[str] = []
    statuses: dict[int, int] = {}
    pending = iter(cases)
    ports = [int(url.rsplit(":", 1)[1]) for url in gateway.urls]
    ORIGIN_HITS.clear()
    started = time.monotonic()

    async def worker(port: int) -> None:
        connection = Connection("127.0.0.1", port)
        try:
            for case in pending:  # one shared iterator: each case is sent once
                body = b'{"fuzz": true}' if case.method == "POST" else None
                try:
                    answer = await connection.request(
                        case.method, f"/api/fuzz/{case.index}", case.headers, body
                    )
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    failures.append(f"{case.describe()}: transport error {exc!r}")
                    await connection.close()
                    continue
                statuses[answer.status] = statuses.get(answer.status, 0) + 1
                why = refusal_problem(answer.status, answer.headers, answer.body)
                if why is not None:
                    failures.append(f"{case.describe()}: {why}")
        finally:
            await connection.close()

    await asyncio.gather(*(worker(ports[i % len(ports)]) for i in range(IN_FLIGHT)))
    elapsed = time.monotonic() - started
    print(f"\nfuzz: {len(cases)} requests in {elapsed:.1f}s ({len(cases) / elapsed:.0f}/s), seed={SEED}, "
          f"statuses={statuses}, kinds={kinds}")  # fmt: skip
    if failures:
        report = tmp_path / "fuzz-failures.txt"
        report.write_text("\n".join(failures))
        raise AssertionError(
            f"{len(failures)} bad answers (EDGE_KV_FUZZ_SEED={SEED}; all of them in {report}):\n"
            + "\n".join(failures[:20])
        )
    assert sum(statuses.values()) == len(cases)
    assert not ORIGIN_HITS, f"{len(ORIGIN_HITS)} malformed requests reached the origin: {ORIGIN_HITS[:5]}"
    async with httpx.AsyncClient(timeout=30) as client:
        for url, host in zip(gateway.urls, gateway.hosts, strict=True):
            health = await client.get(f"{url}/__health")
            assert health.status_code == 200 and health.json()["ok"] is True, health.text
            assert host.proc is not None and host.proc.poll() is None, "a host died"
            assert "Traceback" not in host.output(), host.output()[-3000:]


# --------------------------------------------------------------------------------------
# the same shapes as Hypothesis strategies: sequential, shrinking on failure
# --------------------------------------------------------------------------------------

b64url_text = st.text(alphabet=B64URL, max_size=80)


def json_values(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
        max_leaves=8,
    )


# Header members are echoed in refusal details: any text, including what a header value
# cannot carry.
header_text = st.text(max_size=20)
jose_headers = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(ODD_ALGS) | json_values(header_text),
        "kid": st.sampled_from(ODD_KIDS) | json_values(header_text),
        "crit": st.sampled_from(ODD_CRIT) | json_values(header_text),
        "b64": st.sampled_from(ODD_B64),
        "zip": st.just("DEF"),
        "enc": st.just("A128GCM"),
    },
)


@st.composite
def tokens(draw: st.DrawFn) -> str:
    shape = draw(st.sampled_from(["segments", "jose", "non-ascii"]))
    if shape == "segments":
        return ".".join(draw(st.lists(b64url_text, min_size=0, max_size=6)))
    if shape == "jose":
        head = b64e(json.dumps(draw(jose_headers)).encode())
        claims = draw(st.dictionaries(st.text(max_size=8), json_values(st.text(max_size=20)), max_size=4))
        claims_segment = b64e(json.dumps(claims).encode())
        return f"{head}.{claims_segment}.{b64e(draw(st.binary(max_size=300)))}"
    return draw(b64url_text) + draw(st.sampled_from(NON_ASCII)) + draw(b64url_text)


header_fields = st.lists(
    st.one_of(
        st.tuples(
            st.just("authorization"),
            st.tuples(
                st.sampled_from(["Bearer ", "bearer ", "Basic ", "Token ", "Bearer  ", ""]), tokens()
            ).map("".join),
        ),
        st.tuples(
            st.just("x-api-key"), st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x2FF))
        ),
    ),
    min_size=1,
    max_size=3,
)


@settings(
    max_examples=max(50, EXAMPLES // 50),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fields=header_fields)
def test_hypothesis_header_shapes_are_refused(gateway: Gateway, fields: list[tuple[str, str]]) -> None:
    # Values as a parser sees them (surrounding whitespace is not part of a field value).
    raw = [(n.encode(), v.strip(" \t").encode("utf-8")) for n, v in fields]
    with httpx.Client(base_url=gateway.url, timeout=30) as c:
        r = c.get("/api/hypothesis", headers=raw)
    why = refusal_problem(r.status_code, r.headers, r.content)
    assert why is None, why


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "EdDSA", "kid": "\u6f22\u5b57"},
        {"alg": "HS256", "kid": "\u043a\u043b\u044e\u0447"},
        {"alg": "\u6f22"},
        {"alg": "HS256", "kid": "hs-1", "crit": ["\u263a"], "\u263a": 1},
    ],
    ids=["kid-cjk", "kid-cyrillic", "alg-cjk", "crit-symbol"],
)
def test_non_latin1_header_members_are_refused_cleanly(gateway: Gateway, header: dict[str, Any]) -> None:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 600}
    token = f"{b64e(json.dumps(header).encode())}.{b64e(json.dumps(claims).encode())}.{b64e(bytes(64))}"
    r = httpx.get(f"{gateway.url}/api/known-bug", headers={"authorization": f"Bearer {token}"}, timeout=30)
    why = refusal_problem(r.status_code, r.headers, r.content)
    assert why is None, why


def test_health_after_the_run(gateway: Gateway) -> None:
    for url in gateway.urls:
        r = httpx.get(f"{url}/__health", timeout=30)
        assert r.status_code == 200 and r.json()["ok"] is True
    assert not ORIGIN_HITS
