"""SignatureMiddleware on Starlette and FastAPI apps (httpx ASGITransport): what the edge
signed gets through once, with its identity; everything else is a 401 problem."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from edge_kv.core.errors import InvalidInput, Unavailable
from edge_kv.core.httpsig import HmacKey, HttpRequest, Keyring, content_digest, sign_request
from edge_kv.origin.httpsig import (
    DEFAULT_REQUIRED_COMPONENTS,
    EdgeIdentity,
    MemoryNonceStore,
    NonceStore,
    NonceStoreUnavailable,
    RedisNonceStore,
    SignatureMiddleware,
    SignaturePolicy,
    edge_identity,
    fixed_origin,
)
from edge_kv.origin.testing import free_port

NOW = 1_800_000_000
SECRET = b"k" * 32
RING = Keyring([HmacKey("edge-1", SECRET)])
BASE = "http://testserver"
BODY = b'{"item":"keyboard","quantity":2}'


async def whoami(request: Request) -> JSONResponse:
    identity = edge_identity(request)
    assert identity is not None and request.state.edge_identity is identity
    body = await request.body()
    return JSONResponse(
        {
            "subject": identity.subject,
            "scopes": list(identity.scopes),
            "issuer": identity.issuer,
            "keyid": identity.keyid,
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
    )


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True, "identity": edge_identity(request) is not None})


def starlette_app(store: NonceStore | None = None, *, now: int = NOW, **kwargs: Any) -> Starlette:
    app = Starlette(
        routes=[Route("/orders", whoami, methods=["GET", "POST", "PUT"]), Route("/health", health)]
    )
    app.add_middleware(
        SignatureMiddleware,
        keyring=RING,
        nonce_store=store or MemoryNonceStore(),
        clock=lambda: now,
        **kwargs,
    )
    return app


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


def edge_headers(
    method: str = "POST",
    url: str = f"{BASE}/orders?tenant=7",
    body: bytes = BODY,
    *,
    now: int = NOW,
    key: HmacKey | None = None,
    nonce: str | None = None,
    components: tuple[str, ...] = DEFAULT_REQUIRED_COMPONENTS,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """What the edge sends: identity headers, Content-Digest, Signature-Input, Signature."""
    headers = {
        "X-Edge-Subject": "user-42",
        "X-Edge-Scopes": "orders:read orders:write",
        "X-Edge-Issuer": "https://idp.example",
        "Content-Type": "application/json",
        "Content-Digest": content_digest(body),
        **(extra or {}),
    }
    signed = sign_request(
        HttpRequest.build(method, url, headers), RING, now=now, components=components, nonce=nonce, key=key
    )
    return {**headers, **dict(signed.items())}


def assert_problem_401(response: httpx.Response, reason: str) -> dict[str, Any]:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = json.loads(response.content)
    assert body["status"] == 401 and body["title"] == "Unauthorized" and body["type"] == "about:blank"
    assert body["reason"] == reason
    assert body["instance"] == "/orders"
    assert response.headers["www-authenticate"] == f'Signature realm="edge-origin", error="{reason}"'
    accept = response.headers["accept-signature"]
    assert accept.startswith('sig1=("@method" "@target-uri" "content-digest" "x-edge-subject"')
    assert accept.endswith(';created;nonce;alg="hmac-sha256"')
    assert response.headers["cache-control"] == "no-store"
    return body


async def test_accepted_request_reaches_the_app_with_its_identity() -> None:
    async with client(starlette_app()) as http:
        r = await http.post("/orders?tenant=7", content=BODY, headers=edge_headers())
    assert r.status_code == 200, r.text
    assert r.json() == {
        "subject": "user-42",
        "scopes": ["orders:read", "orders:write"],
        "issuer": "https://idp.example",
        "keyid": "edge-1",
        "body_sha256": hashlib.sha256(BODY).hexdigest(),  # the app still reads the whole body
    }


async def test_replayed_request_is_refused() -> None:
    headers = edge_headers()
    async with client(starlette_app()) as http:
        first = await http.post("/orders?tenant=7", content=BODY, headers=headers)
        again = await http.post("/orders?tenant=7", content=BODY, headers=headers)
    assert first.status_code == 200
    assert_problem_401(again, "replayed")


async def test_one_changed_header_is_refused() -> None:
    headers = {**edge_headers(), "X-Edge-Scopes": "orders:read orders:write admin"}
    async with client(starlette_app()) as http:
        r = await http.post("/orders?tenant=7", content=BODY, headers=headers)
    assert_problem_401(r, "bad_signature")


async def test_changed_body_is_refused() -> None:
    async with client(starlette_app()) as http:
        r = await http.post("/orders?tenant=7", content=BODY.replace(b"2", b"9"), headers=edge_headers())
    assert_problem_401(r, "digest_mismatch")


async def test_changed_query_or_method_is_refused() -> None:
    async with client(starlette_app()) as http:
        r1 = await http.post("/orders?tenant=8", content=BODY, headers=edge_headers())
        r2 = await http.put("/orders?tenant=7", content=BODY, headers=edge_headers())
    assert_problem_401(r1, "bad_signature")
    assert_problem_401(r2, "bad_signature")


async def test_stale_created_is_refused() -> None:
    async with client(starlette_app()) as http:
        r = await http.post("/orders?tenant=7", content=BODY, headers=edge_headers(now=NOW - 301))
        ok = await http.post("/orders?tenant=7", content=BODY, headers=edge_headers(now=NOW - 300))
    assert_problem_401(r, "expired")
    assert ok.status_code == 200


async def test_future_created_within_skew_only() -> None:
    policy = SignaturePolicy(clock_skew_s=10)
    async with client(starlette_app(policy=policy)) as http:
        ahead = await http.post("/orders?tenant=7", content=BODY, headers=edge_headers(now=NOW + 11))
        skewed = await http.post("/orders?tenant=7", content=BODY, headers=edge_headers(now=NOW + 10))
    assert_problem_401(ahead, "not_yet_valid")
    assert skewed.status_code == 200


async def test_unknown_keyid_is_refused() -> None:
    stranger = HmacKey("edge-stolen", b"s" * 32)
    async with client(starlette_app()) as http:
        r = await http.post("/orders?tenant=7", content=BODY, headers=edge_headers(key=stranger))
    assert_problem_401(r, "unknown_key")


async def test_missing_and_malformed_signatures_are_refused() -> None:
    plain = {"X-Edge-Subject": "user-42", "Content-Digest": content_digest(BODY)}
    broken = {**edge_headers(), "Signature": "sig1=:not base64:"}
    async with client(starlette_app()) as http:
        missing = await http.post("/orders?tenant=7", content=BODY, headers=plain)
        malformed = await http.post("/orders?tenant=7", content=BODY, headers=broken)
    assert_problem_401(missing, "missing")
    assert_problem_401(malformed, "malformed")


async def test_insufficient_coverage_is_refused() -> None:
    headers = edge_headers(components=("@method", "@target-uri", "content-digest", "x-edge-subject"))
    async with client(starlette_app()) as http:
        r = await http.post("/orders?tenant=7", content=BODY, headers=headers)
    body = assert_problem_401(r, "insufficient_coverage")
    assert "x-edge-scopes" in body["detail"]


async def test_signature_without_nonce_is_refused_by_default() -> None:
    headers = edge_headers()
    headers["Signature-Input"] = headers["Signature-Input"].replace(";nonce=", ";tag=")
    async with client(starlette_app()) as http:
        r = await http.post("/orders?tenant=7", content=BODY, headers=headers)
    assert_problem_401(r, "insufficient_coverage")


async def test_identity_comes_only_from_signed_values() -> None:
    policy = SignaturePolicy(
        required_components=("@method", "@target-uri", "content-digest", "x-edge-subject")
    )
    headers = edge_headers(components=policy.required_components)
    # Present, but not covered by the signature: must not become identity.
    headers["X-Edge-Issuer"] = "https://evil.example"
    headers["X-Edge-Scopes"] = "admin"
    async with client(starlette_app(policy=policy)) as http:
        r = await http.post("/orders?tenant=7", content=BODY, headers=headers)
    assert r.status_code == 200
    assert r.json()["subject"] == "user-42"
    assert r.json()["issuer"] is None and r.json()["scopes"] == []


async def test_get_without_body_needs_the_empty_digest() -> None:
    async with client(starlette_app()) as http:
        r = await http.get("/orders", headers=edge_headers("GET", f"{BASE}/orders", b""))
    assert r.status_code == 200 and r.json()["body_sha256"] == hashlib.sha256(b"").hexdigest()


async def test_body_over_the_limit_is_413_before_verification() -> None:
    big = b"x" * 2048
    async with client(starlette_app(max_body_bytes=1024)) as http:
        r = await http.post("/orders?tenant=7", content=big, headers=edge_headers(body=big))
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["reason"] == "too_large"


async def test_chunked_body_over_the_limit_is_413() -> None:
    async def chunks() -> Any:
        for _ in range(4):
            yield b"y" * 400

    async with client(starlette_app(max_body_bytes=1024)) as http:
        r = await http.post("/orders?tenant=7", content=chunks(), headers=edge_headers(body=b"y" * 1600))
    assert r.status_code == 413


async def test_exempt_paths_pass_without_identity() -> None:
    app = starlette_app(exempt=lambda scope: scope["path"] == "/health")
    async with client(app) as http:
        health_r = await http.get("/health")
        orders_r = await http.get("/orders")
    assert health_r.json() == {"ok": True, "identity": False}
    assert_problem_401(orders_r, "missing")


async def test_behind_a_tls_proxy_use_the_public_origin() -> None:
    public = "https://api.example.com"
    headers = edge_headers(url=f"{public}/orders?tenant=7")
    async with client(starlette_app()) as http:
        wrong = await http.post("/orders?tenant=7", content=BODY, headers=headers)
    async with client(starlette_app(target_uri=fixed_origin(public))) as http:
        right = await http.post("/orders?tenant=7", content=BODY, headers=headers)
    assert_problem_401(wrong, "bad_signature")
    assert right.status_code == 200


async def test_key_rotation_old_and_new_keys_both_verify() -> None:
    ring = Keyring(
        [HmacKey("edge-1", SECRET, activated_at=0), HmacKey("edge-2", b"n" * 32, activated_at=NOW - 5)]
    )
    app = Starlette(routes=[Route("/orders", whoami, methods=["POST"])])
    app.add_middleware(SignatureMiddleware, keyring=ring, nonce_store=MemoryNonceStore(), clock=lambda: NOW)
    headers_new = {**edge_headers()}
    req = HttpRequest.build("POST", f"{BASE}/orders?tenant=7", {k: v for k, v in headers_new.items()})
    signed_new = sign_request(req, ring, now=NOW, components=DEFAULT_REQUIRED_COMPONENTS)
    assert signed_new.params.keyid == "edge-2"
    headers_new.update(signed_new.items())
    async with client(app) as http:
        old = await http.post("/orders?tenant=7", content=BODY, headers=edge_headers())
        new = await http.post("/orders?tenant=7", content=BODY, headers=headers_new)
    assert old.json()["keyid"] == "edge-1" and new.json()["keyid"] == "edge-2"


# --- FastAPI, as in docs/gateway-building-blocks.md ---------------------------------------


def require_identity(request: Request) -> EdgeIdentity:
    identity = edge_identity(request)
    assert identity is not None  # the middleware guarantees it for every non-exempt route
    return identity


async def test_fastapi_dependency_reads_the_identity() -> None:
    api = FastAPI()

    @api.post("/orders")
    async def create_order(identity: Annotated[EdgeIdentity, Depends(require_identity)]) -> dict[str, Any]:
        return {"subject": identity.subject, "can_write": identity.has_scope("orders:write")}

    api.add_middleware(SignatureMiddleware, keyring=RING, nonce_store=MemoryNonceStore(), clock=lambda: NOW)
    async with client(api) as http:
        ok = await http.post("/orders?tenant=7", content=BODY, headers=edge_headers())
        bad = await http.post("/orders?tenant=7", content=BODY, headers={"X-Edge-Subject": "forged"})
    assert ok.json() == {"subject": "user-42", "can_write": True}
    assert_problem_401(bad, "missing")


# --- Redis nonce store --------------------------------------------------------------------


async def test_redis_nonce_store_refuses_replays_across_app_instances(redis: aioredis.Redis) -> None:
    headers = edge_headers(nonce="redis-nonce-1")
    # Two app instances (two workers/hosts) share one Redis: the second sees the replay.
    async with (
        client(starlette_app(RedisNonceStore(redis))) as a,
        client(starlette_app(RedisNonceStore(redis))) as b,
    ):
        first = await a.post("/orders?tenant=7", content=BODY, headers=headers)
        replay = await b.post("/orders?tenant=7", content=BODY, headers=headers)
    assert first.status_code == 200
    assert_problem_401(replay, "replayed")
    keys = await redis.keys("edge-kv:httpsig:nonce:*")
    assert len(keys) == 1
    ttl = await redis.ttl(keys[0])
    assert 300 < ttl <= 330  # max_age + clock skew


async def test_forged_signatures_do_not_burn_nonces(redis: aioredis.Redis) -> None:
    headers = edge_headers(nonce="precious")
    forged = {**headers, "X-Edge-Subject": "mallory"}
    async with client(starlette_app(RedisNonceStore(redis))) as http:
        refused = await http.post("/orders?tenant=7", content=BODY, headers=forged)
        genuine = await http.post("/orders?tenant=7", content=BODY, headers=headers)
    assert_problem_401(refused, "bad_signature")
    assert genuine.status_code == 200


async def test_unreachable_nonce_store_fails_closed_with_503() -> None:
    dead = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    try:
        async with client(starlette_app(RedisNonceStore(dead, timeout_s=0.5))) as http:
            r = await http.post("/orders?tenant=7", content=BODY, headers=edge_headers())
    finally:
        await dead.aclose()
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["retry-after"] == "1"
    assert r.json()["reason"] == "nonce_store_unavailable"


# --- units: nonce store, policy, construction ----------------------------------------------


async def test_memory_nonce_store_expires_and_bounds_memory() -> None:
    t = [0.0]
    store = MemoryNonceStore(clock=lambda: t[0], max_entries=2)
    assert await store.claim("a", 10) is True
    assert await store.claim("a", 10) is False
    t[0] = 10.0
    assert await store.claim("a", 10) is True  # expired, claimable again
    assert await store.claim("b", 10) is True
    with pytest.raises(NonceStoreUnavailable) as info:
        await store.claim("c", 10)  # full of live nonces: refuse, never forget
    assert isinstance(info.value, Unavailable)
    t[0] = 25.0
    assert await store.claim("c", 10) is True  # purged
    with pytest.raises(InvalidInput):
        await store.claim("d", 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_age_s": 0},
        {"max_age_s": -1},
        {"clock_skew_s": 1.5},
        {"required_components": ("@status",)},
        {"required_components": ("x bad name",)},
        {"required_params": ("created", "bogus")},
    ],
)
def test_bad_policy(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        SignaturePolicy(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"keyring": {"edge-1": SECRET}},
        {"nonce_store": object()},
        {"max_body_bytes": -1},
        {"realm": 'a"b'},
        {"unavailable_retry_after": -1},
    ],
)
def test_bad_middleware_arguments(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"keyring": RING, "nonce_store": MemoryNonceStore(), **kwargs}
    with pytest.raises(InvalidInput):
        SignatureMiddleware(lambda s, r, se: None, **args)  # type: ignore[arg-type, return-value]


def test_fixed_origin_refuses_a_path() -> None:
    with pytest.raises(InvalidInput):
        fixed_origin("https://api.example.com/v1")
    with pytest.raises(InvalidInput):
        fixed_origin("api.example.com")


async def test_non_http_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        seen.append(scope["type"])

    mw = SignatureMiddleware(app, keyring=RING, nonce_store=MemoryNonceStore())
    await mw({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"]
