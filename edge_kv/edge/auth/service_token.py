"""The bearer token that guards the service APIs (explicit-key limits, locks over HTTP).

The APIs are refused (503) until the ``EDGE_KV_SERVICE_TOKEN`` secret is set, then need
``Authorization: Bearer <token>`` (401 otherwise). The comparison is constant-time.
"""

from __future__ import annotations

import hmac
from typing import Any

from edge_kv.core.errors import EdgeKvError, Unavailable
from edge_kv.edge.env import env_str

__all__ = [
    "SERVICE_TOKEN_VAR",
    "ServiceApiDisabled",
    "ServiceTokenRefused",
    "check_service_token",
    "require_service_token",
]

SERVICE_TOKEN_VAR = "EDGE_KV_SERVICE_TOKEN"


class ServiceTokenRefused(EdgeKvError):
    """The caller did not present the service token (401)."""

    status = 401
    code = "unauthorized"


class ServiceApiDisabled(Unavailable):
    """The service token is not configured, so the service API is off (503)."""

    code = "service_api_disabled"


def check_service_token(env: Any, authorization: str | None) -> tuple[int, str] | None:
    """``(status, detail)`` when the caller may not proceed, else ``None``."""
    try:
        require_service_token(env, authorization)
    except EdgeKvError as exc:
        return exc.status, exc.detail
    return None


def require_service_token(env: Any, authorization: str | None) -> None:
    """Raise :class:`ServiceApiDisabled` (503) or :class:`ServiceTokenRefused` (401)."""
    token = env_str(env, SERVICE_TOKEN_VAR)
    if token is None:
        raise ServiceApiDisabled(f"the service API is disabled: set the {SERVICE_TOKEN_VAR} secret")
    presented = (authorization or "").strip()
    if not presented.lower().startswith("bearer "):
        raise ServiceTokenRefused("missing 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(presented[7:].strip().encode(), token.encode()):
        raise ServiceTokenRefused("invalid service token")
