"""The gateway tour's other half: three signed origins and a token minter.

    .venv/bin/python docs/examples/gateway_demo.py origins [NAME ...]   # eu-west :9001, eu-central :9002, us-east :9003
    .venv/bin/python docs/examples/gateway_demo.py token alice "orders:read orders:write"

Each origin is docs/examples/signed_origin.py (FastAPI behind the RFC 9421 verifier, nonces
in Redis at REDIS_URL, default redis://127.0.0.1:6379/0) with the demo signing key of
docs/examples/gateway.dev.vars. Start each origin in its own process (name it) and stop
one to watch the gateway fail over. Tokens are HS256, signed with the demo issuer's key in the same file.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEV_VARS = HERE / "gateway.dev.vars"
ORIGINS = {"eu-west": 9001, "eu-central": 9002, "us-east": 9003}


def dev_var(name: str) -> str:
    for line in DEV_VARS.read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1].strip().strip("'")
    raise SystemExit(f"{name} is missing from {DEV_VARS}")


def token(subject: str, scope: str) -> str:
    import jwt

    gateway = json.loads(dev_var("EDGE_KV_GATEWAY"))
    key = gateway["issuers"]["demo"]["jwks"]["keys"][0]
    secret = jwt.utils.base64url_decode(key["k"])
    now = int(time.time())
    claims = {
        "sub": subject,
        "scope": scope,
        "iss": "https://id.demo",
        "aud": "orders",
        "iat": now,
        "exp": now + 3600,
    }
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": key["kid"]})


async def serve_origins(names: list[str]) -> None:
    import uvicorn

    sys.path.insert(0, str(HERE.parent.parent))
    from docs.examples.signed_origin import create_app, keyring_from_env

    keyring = keyring_from_env(dev_var("EDGE_KV_SIGNING_KEYS"))
    servers = []
    for name in names or list(ORIGINS):
        if name not in ORIGINS:
            raise SystemExit(f"unknown origin {name!r}; choose from {sorted(ORIGINS)}")
        port = ORIGINS[name]
        app = create_app(keyring=keyring, redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        servers.append(uvicorn.Server(config))
        print(f"{name}: http://127.0.0.1:{port}")
    print(f"pid {os.getpid()}", flush=True)
    await asyncio.gather(*(s.serve() for s in servers))


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "token":
        print(
            token(
                sys.argv[2] if len(sys.argv) > 2 else "alice",
                sys.argv[3] if len(sys.argv) > 3 else "orders:read",
            )
        )
    elif len(sys.argv) >= 2 and sys.argv[1] == "origins":
        asyncio.run(serve_origins(sys.argv[2:]))
    else:
        raise SystemExit(__doc__)
