"""A FastAPI service that only accepts what the edge signed (RFC 9421 ``hmac-sha256``).

* every route except ``/healthz`` requires a valid edge signature over the method, the
  target URI, ``Content-Digest`` and the ``X-Edge-Subject``/``X-Edge-Scopes``/
  ``X-Edge-Issuer`` headers, at most 5 minutes old, used once (nonces in Redis);
* handlers read the signed identity through a dependency, never from raw headers.

Keys: ``EDGE_SIG_KEYS`` is a JSON object ``{"keyid": "<hex secret>", ...}`` in activation
order (the last one is the newest; all of them verify, so rotation is: add the new key
here, deploy, switch the edge, remove the old key later).

Run it:  REDIS_URL=redis://127.0.0.1:6379/0 PUBLIC_ORIGIN=https://api.example.com \
         EDGE_SIG_KEYS='{"edge-2026-11": "<64 hex chars>"}' \
         uvicorn --factory docs.examples.signed_origin:create_app
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, HTTPException, Request

from edge_kv.origin.httpsig import (
    EdgeIdentity,
    Keyring,
    RedisNonceStore,
    SignatureMiddleware,
    SignaturePolicy,
    edge_identity,
    fixed_origin,
    target_uri_from_scope,
)


def keyring_from_env(raw: str) -> Keyring:
    return Keyring.from_secrets({keyid: bytes.fromhex(secret) for keyid, secret in json.loads(raw).items()})


def require_identity(request: Request) -> EdgeIdentity:
    identity = edge_identity(request)
    if identity is None:  # only reachable on exempt routes
        raise HTTPException(status_code=401, detail="not signed by the edge")
    return identity


def require_scope(scope: str) -> Any:
    def check(identity: Annotated[EdgeIdentity, Depends(require_identity)]) -> EdgeIdentity:
        if not identity.has_scope(scope):
            raise HTTPException(status_code=403, detail=f"scope {scope!r} required")
        return identity

    return check


def create_app(
    *, keyring: Keyring | None = None, redis_url: str | None = None, public_origin: str | None = None
) -> FastAPI:
    keyring = keyring or keyring_from_env(os.environ["EDGE_SIG_KEYS"])
    redis = aioredis.Redis.from_url(redis_url or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    origin = public_origin or os.environ.get("PUBLIC_ORIGIN")

    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/me")
    async def me(identity: Annotated[EdgeIdentity, Depends(require_identity)]) -> dict[str, Any]:
        return {"subject": identity.subject, "scopes": list(identity.scopes), "issuer": identity.issuer}

    @app.post("/orders", status_code=201)
    async def create_order(
        request: Request, identity: Annotated[EdgeIdentity, Depends(require_scope("orders:write"))]
    ) -> dict[str, Any]:
        order = await request.json()  # the body the signature's Content-Digest covered
        return {"order": order, "owner": identity.subject}

    app.add_middleware(
        SignatureMiddleware,
        keyring=keyring,
        nonce_store=RedisNonceStore(redis),
        policy=SignaturePolicy(max_age_s=300, clock_skew_s=30),
        exempt=lambda scope: scope["path"] == "/healthz",
        target_uri=fixed_origin(origin) if origin else target_uri_from_scope,
    )
    return app
