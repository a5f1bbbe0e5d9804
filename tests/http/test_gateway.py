"""The edge gateway end to end: the real host runs the reference Worker with an
``EDGE_KV_GATEWAY`` document whose origins are Starlette apps this test serves, each behind
the origin library's RFC 9421 verifier (``SignatureMiddleware``).

Shown here: transparent signed forwarding (methods, bodies, statuses, headers both ways,
hop-by-hop removed, ``Via``), client-sent identity dropped, JWT (minted by PyJWT) and API-key
authentication with RFC 6750 answers, scopes, rate limits keyed on the verified subject,
geo rules and nearest origin from ``request.cf``, residency held during failover, a failing
origin skipped within the same request and tried again after its cool-down, 502/504 with
problem bodies, ``Server-Timing``, and a streamed response.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from edge_kv.core.httpsig import Keyring
from edge_kv.origin.httpsig import MemoryNonceStore, SignatureMiddleware

pytestmark = pytest.mark.host_only

SIGNING = {"edge-2026-10": "11" * 32, "edge-2026-11": "0123456789abcdef" * 4}  # hex; the last one signs
HS_SECRET = b"jwt-test-secret-for-hs256-at-least-32-bytes!"
SERVICE_TOKEN = "gateway-test-token"
FAILING: set[str] = set()  # origin names that answer 503
SEEN: dict[str, list[dict[str, Any]]] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def origin_app(name: str) -> Any:
    async def echo(request: Request) -> Response:
        body = await request.body()
        record = {
            "origin": name,
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "body": body.decode("utf-8", "replace"),
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "identity": {
                "subject": request.headers.get("x-edge-subject"),
                "scopes": request.headers.get("x-edge-scopes"),
                "issuer": request.headers.get("x-edge-issuer"),
                "auth": request.headers.get("x-edge-auth"),
            },
        }
        SEEN.setdefault(name, []).append(record)
        if name in FAILING:
            return JSONResponse({"origin": name, "error": "failing on purpose"}, status_code=503)
        if request.url.path.endswith("/slow"):
            await asyncio.sleep(2)
        if request.url.path.endswith("/status/418"):
            return JSONResponse({"origin": name}, status_code=418, headers={"x-origin-extra": "kept"})
        if request.url.path.endswith("/stream"):

            async def chunks() -> AsyncIterator[bytes]:
                for i in range(3):
                    if i:
                        await asyncio.sleep(0.4)
                    yield json.dumps({"chunk": i, "at": time.monotonic()}).encode() + b"\n"

            return StreamingResponse(chunks(), media_type="application/x-ndjson")
        headers = {"x-origin": name, "connection": "x-hop", "x-hop": "must not pass"}
        return JSONResponse(record, headers=headers)

    app = Starlette(
        routes=[Route("/{path:path}", echo, methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"])]
    )
    return SignatureMiddleware(
        app,
        keyring=Keyring.from_secrets({k: bytes.fromhex(v) for k, v in SIGNING.items()}),
        nonce_store=MemoryNonceStore(),
    )


class OriginServer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        config = uvicorn.Config(
            origin_app(name), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started, f"origin {self.name} did not start"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


def gateway_document(origins: dict[str, OriginServer], dead_port: int) -> dict[str, Any]:
    def o(name: str, lat: float, lon: float, jur: str) -> dict[str, Any]:
        return {
            "name": name,
            "url": origins[name].url,
            "latitude": lat,
            "longitude": lon,
            "jurisdictions": [jur],
        }

    return {
        "routes": [
            {"name": "public", "prefix": "/public/", "auth": "none", "routing": "global"},
            {
                "name": "orders",
                "prefix": "/api/",
                "auth": ["jwt:main", "api_key"],
                "scopes": ["orders:read"],
                "limits": ["per-subject"],
                "routing": "global",
                "timeout_ms": 3000,
            },
            {
                "name": "failover",
                "prefix": "/failover/",
                "auth": "none",
                "routing": "with-dead",
                "timeout_ms": 3000,
            },
            {"name": "alldead", "prefix": "/alldead/", "auth": "none", "routing": "all-dead"},
            {"name": "slow", "prefix": "/slow/", "auth": "none", "routing": "global", "timeout_ms": 500},
            {"name": "stripped", "prefix": "/v1", "auth": "none", "routing": "global", "strip_prefix": True},
        ],
        "issuers": {
            "main": {
                "issuer": "https://id.test",
                "audience": "orders",
                "jwks": {
                    "keys": [
                        {
                            "kty": "oct",
                            "kid": "hs-1",
                            "alg": "HS256",
                            "k": jwt.utils.base64url_encode(HS_SECRET).decode(),
                        }
                    ]
                },
            }
        },
        "routing": {
            "global": {
                "pools": {
                    "eu": {
                        "strategy": "nearest",
                        "origins": [o("eu-west", 53.35, -6.26, "eu"), o("eu-central", 50.11, 8.68, "eu")],
                    },
                    "us": {"strategy": "weighted", "origins": [o("us-east", 38.9, -77.0, "us")]},
                },
                "rules": [{"name": "eu-visitors", "match": {"eu": True}, "pools": ["eu"]}],
                "default": {"pools": ["us", "eu"]},
                "residency": [{"name": "gdpr", "visitors": {"eu": True}, "jurisdictions": ["eu"]}],
            },
            "all-dead": {
                "pools": {
                    "p": {
                        "strategy": "ordered",
                        "origins": [
                            {"name": "dead-1", "url": f"http://127.0.0.1:{dead_port}"},
                            {"name": "dead-2", "url": f"http://127.0.0.1:{dead_port}/"},
                        ],
                    }
                },
                "default": {"pools": ["p"]},
            },
            "with-dead": {
                "pools": {
                    "p": {
                        "strategy": "ordered",
                        "origins": [
                            {"name": "dead", "url": f"http://127.0.0.1:{dead_port}", "jurisdictions": ["eu"]},
                            o("eu-west", 53.35, -6.26, "eu"),
                        ],
                    }
                },
                "default": {"pools": ["p"]},
            },
        },
        "limits": {
            "limits": {
                "per-subject": {
                    "key": ["subject"],
                    "tiers": [{"name": "subject-minute", "kind": "fixed_window", "limit": 5, "window_s": 60}],
                }
            }
        },
        "health": {"cooldown_s": 1, "refresh_s": 1},
    }


@pytest.fixture(scope="module")
def origins() -> Iterator[dict[str, OriginServer]]:
    servers = {n: OriginServer(n) for n in ("eu-west", "eu-central", "us-east")}
    for s in servers.values():
        s.start()
    yield servers
    for s in servers.values():
        s.stop()


@pytest.fixture(scope="module")
def gateway_url(
    origins: dict[str, OriginServer], worker_config: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    from hostproc import HostProcess

    directory = tmp_path_factory.mktemp("gateway")
    config = directory / "wrangler.toml"
    config.write_text(worker_config.read_text())
    doc = json.dumps(gateway_document(origins, free_port()), separators=(",", ":"))
    dev_vars = {
        "EDGE_KV_GATEWAY": doc,
        "EDGE_KV_SIGNING_KEYS": json.dumps(SIGNING),
        "EDGE_KV_SERVICE_TOKEN": SERVICE_TOKEN,
        "EDGE_KV_GATEWAY_CACHE_S": "0",
    }
    (directory / ".dev.vars").write_text("".join(f"{k}='{v}'\n" for k, v in dev_vars.items()))
    host = HostProcess(config, tmp_path_factory.mktemp("gateway-persist"))
    try:
        yield host.start()
    finally:
        host.close()


@pytest.fixture
async def gw(gateway_url: str) -> AsyncIterator[httpx.AsyncClient]:
    FAILING.clear()
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as c:
        yield c


def cf(**values: Any) -> dict[str, str]:
    return {"x-edge-kv-test-cf": json.dumps(values)}


US = {"country": "US", "continent": "NA", "latitude": "40.7", "longitude": "-74.0", "isEUCountry": "0"}
DE = {"country": "DE", "continent": "EU", "latitude": "50.9", "longitude": "6.9", "isEUCountry": "1"}
IE = {"country": "IE", "continent": "EU", "latitude": "53.3", "longitude": "-6.3", "isEUCountry": "1"}


def token(sub: str = "user-1", scope: str = "orders:read", **claims: Any) -> str:
    now = int(time.time())
    body = {
        "sub": sub,
        "scope": scope,
        "iss": "https://id.test",
        "aud": "orders",
        "exp": now + 300,
        "iat": now,
    }
    body.update(claims)
    return jwt.encode(body, HS_SECRET, algorithm="HS256", headers={"kid": "hs-1"})


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    return body


# ---- forwarding ---------------------------------------------------------------------------


async def test_public_route_is_forwarded_signed_and_transparent(gw: httpx.AsyncClient) -> None:
    r = await gw.post(
        "/public/things?b=2&a=1",
        content=b'{"hello": "world"}',
        headers={
            **cf(**US, connectingIp="198.51.100.7"),
            "content-type": "application/json",
            "x-custom": "passes",
            "x-edge-subject": "admin",  # forged identity: dropped
            "x-forwarded-for": "10.0.0.1",  # never trusted
            "signature": "sig1=:AAAA:",
        },
    )
    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["origin"] == "us-east" and r.headers["x-edge-origin"] == "us-east"
    assert seen["method"] == "POST" and seen["path"] == "/public/things" and seen["query"] == "b=2&a=1"
    assert seen["body"] == '{"hello": "world"}'
    assert seen["headers"]["x-custom"] == "passes"
    assert seen["identity"] == {"subject": "", "scopes": "", "issuer": "", "auth": "none"}
    assert seen["headers"]["x-edge-client-ip"] == "198.51.100.7"
    assert "x-forwarded-for" not in seen["headers"]
    assert seen["headers"]["x-edge-country"] == "US"
    assert 'keyid="edge-2026-11"' in seen["headers"]["signature-input"]  # the newest key signs
    # Response side: origin headers pass, hop-by-hop ones do not, Via and timing are added.
    assert r.headers["x-origin"] == "us-east"
    assert "x-hop" not in r.headers
    assert "edge-kv" in r.headers["via"]
    timing = r.headers["server-timing"]
    for stage in ("normalise", "auth", "limit", "route", "origin"):
        assert f"{stage};dur=" in timing, timing
    assert "rule default" in r.headers["x-edge-route-reason"]


async def test_status_and_headers_of_the_origin_pass_through(gw: httpx.AsyncClient) -> None:
    r = await gw.get("/public/status/418", headers=cf(**US))
    assert r.status_code == 418 and r.headers["x-origin-extra"] == "kept"
    head = await gw.head("/public/things", headers=cf(**US))
    assert head.status_code == 200 and head.content == b""


async def test_strip_prefix(gw: httpx.AsyncClient) -> None:
    r = await gw.get("/v1/items", headers=cf(**US))
    assert r.status_code == 200 and r.json()["path"] == "/items"


async def test_response_streams_through(gw: httpx.AsyncClient) -> None:
    async with gw.stream("GET", "/public/stream", headers=cf(**US)) as r:
        assert r.status_code == 200
        arrivals = []
        async for line in r.aiter_lines():
            if line:
                arrivals.append(time.monotonic())
    assert len(arrivals) == 3
    assert arrivals[2] - arrivals[0] > 0.6, "the chunks arrived together: the body was buffered"


# ---- authentication and authorisation -----------------------------------------------------


async def test_missing_credentials_are_401_with_a_bearer_challenge(gw: httpx.AsyncClient) -> None:
    r = await gw.get("/api/orders/1", headers=cf(**US))
    assert_problem(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "error=" not in r.headers["www-authenticate"]  # RFC 6750 §3.1: none without credentials


@pytest.mark.parametrize(
    "bad",
    [
        "not-a-jwt",
        token(exp=int(time.time()) - 3600),
        token(aud="someone-else"),
        token(iss="https://evil.test"),
        jwt.encode(
            {"sub": "x", "exp": int(time.time()) + 60},
            b"wrong-secret-wrong-secret-wrong-secret!",
            algorithm="HS256",
        ),
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4In0.",
    ],
    ids=["garbage", "expired", "audience", "issuer", "wrong-key", "alg-none"],
)
async def test_bad_tokens_are_401_invalid_token(gw: httpx.AsyncClient, bad: str) -> None:
    r = await gw.get("/api/orders/1", headers={**cf(**US), "authorization": f"Bearer {bad}"})
    assert_problem(r, 401)
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


async def test_missing_scope_is_403(gw: httpx.AsyncClient) -> None:
    r = await gw.get(
        "/api/orders/1", headers={**cf(**US), "authorization": f"Bearer {token(scope='profile')}"}
    )
    assert_problem(r, 403)
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]


async def test_jwt_identity_reaches_the_origin_signed(gw: httpx.AsyncClient) -> None:
    r = await gw.get(
        "/api/orders/1",
        headers={**cf(**US), "authorization": f"Bearer {token('user-jwt', 'orders:read orders:write')}"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["identity"] == {
        "subject": "user-jwt",
        "scopes": "orders:read orders:write",
        "issuer": "https://id.test",
        "auth": "jwt:main",
    }
    assert "ratelimit" in r.headers


async def test_api_keys_with_scopes_and_revocation(gw: httpx.AsyncClient) -> None:
    from edge_kv.edge.auth import api_key_kv_key

    admin = {"authorization": f"Bearer {SERVICE_TOKEN}"}
    record = json.dumps({"subject": "partner-7", "scopes": ["orders:read"]})
    put = await gw.put(f"/admin/kv/{api_key_kv_key('pk_live_1')}", json={"value": record}, headers=admin)
    assert put.status_code == 200, put.text
    r = await gw.get("/api/orders/2", headers={**cf(**US), "x-api-key": "pk_live_1"})
    assert r.status_code == 200, r.text
    assert r.json()["identity"]["subject"] == "partner-7" and r.json()["identity"]["auth"] == "api_key"
    assert_problem(await gw.get("/api/orders/2", headers={**cf(**US), "x-api-key": "pk_guess"}), 401)
    await gw.delete(f"/admin/kv/{api_key_kv_key('pk_live_1')}", headers=admin)
    assert_problem(await gw.get("/api/orders/2", headers={**cf(**US), "x-api-key": "pk_live_1"}), 401)


async def test_limits_are_keyed_on_the_verified_subject(gw: httpx.AsyncClient) -> None:
    bearer = {"authorization": f"Bearer {token('user-limited')}"}
    statuses = []
    for i in range(7):  # different IPs: the subject, not the address, is limited
        r = await gw.get("/api/orders/9", headers={**cf(**US, connectingIp=f"203.0.113.{i}"), **bearer})
        statuses.append(r.status_code)
    assert statuses == [200] * 5 + [429, 429]
    other = await gw.get(
        "/api/orders/9", headers={**cf(**US), "authorization": f"Bearer {token('someone-else')}"}
    )
    assert other.status_code == 200


# ---- geo, residency, health ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (US, "us-east"),
        (DE, "eu-central"),
        (IE, "eu-west"),
        ({"country": "FR", "isEUCountry": "1"}, "eu-west"),
    ],
    ids=["us-default", "de-nearest", "ie-nearest", "eu-without-coordinates"],
)
async def test_geo_rules_and_nearest_origin(
    gw: httpx.AsyncClient, where: dict[str, str], expected: str
) -> None:
    r = await gw.get("/public/where", headers=cf(**where))
    assert r.status_code == 200, r.text
    if "latitude" in where:
        assert r.headers["x-edge-origin"] == expected
    else:
        assert r.headers["x-edge-origin"] in ("eu-west", "eu-central")
    assert r.headers["x-edge-route-reason"]


async def test_residency_holds_during_failover(gw: httpx.AsyncClient) -> None:
    FAILING.add("eu-central")
    SEEN.clear()
    r = await gw.get("/public/residency", headers=cf(**DE))
    assert r.status_code == 200 and r.headers["x-edge-origin"] == "eu-west", r.text
    assert [rec["origin"] for rec in SEEN.get("eu-central", [])] == [
        "eu-central"
    ]  # tried once, then moved on
    FAILING.add("eu-west")
    r = await gw.get("/public/residency", headers=cf(**DE))
    assert r.status_code in (503,) and "us-east" not in r.headers.get("x-edge-origin", "")
    assert not SEEN.get("us-east"), "an EU visitor reached a US origin"
    FAILING.clear()
    await asyncio.sleep(1.2)  # the cool-down passes: the preferred origin is used again
    r = await gw.get("/public/residency", headers=cf(**DE))
    assert r.status_code == 200 and r.headers["x-edge-origin"] == "eu-central"


async def test_a_dead_origin_is_skipped_within_the_same_request(gw: httpx.AsyncClient) -> None:
    r = await gw.get("/failover/x", headers=cf(**IE))
    assert r.status_code == 200 and r.headers["x-edge-origin"] == "eu-west", r.text
    # Not idempotent and no Idempotency-Key: not retried elsewhere, so the refusal shows.
    await asyncio.sleep(1.2)
    r = await gw.post("/failover/x", content=b"{}", headers=cf(**IE))
    assert_problem(r, 502)
    await asyncio.sleep(1.2)
    r = await gw.post("/failover/x", content=b"{}", headers={**cf(**IE), "idempotency-key": "k-1"})
    assert r.status_code == 200 and r.headers["x-edge-origin"] == "eu-west"


async def test_every_allowed_origin_unreachable_is_503_with_retry_after(gw: httpx.AsyncClient) -> None:
    r = await gw.get("/alldead/x", headers=cf(**IE))
    body = assert_problem(r, 503)
    assert r.headers["retry-after"] and body["code"] == "no_origin"
    assert "could not reach the origin" in body["detail"]


async def test_a_slow_origin_is_504(gw: httpx.AsyncClient) -> None:
    started = time.monotonic()
    r = await gw.post("/slow/slow", content=b"", headers=cf(**US))
    assert_problem(r, 504)
    assert time.monotonic() - started < 1.8


async def test_unknown_paths_still_reach_the_worker_routes(gw: httpx.AsyncClient) -> None:
    r = await gw.get("/__health")
    assert r.status_code == 200 and r.json()["ok"] is True
