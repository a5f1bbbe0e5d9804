"""API keys stored hashed in Workers KV.

KV ``apikey:<sha256 hex of the key>`` holds what the key authenticates: either the subject
id as plain text, or a JSON object ``{"subject": str, "scopes": [str], "owner": str,
"expires_at": <unix seconds>}`` (all but ``subject`` optional). The raw key never reaches
storage; what later stages (limits, the origin) see is the subject. A lookup is by the
digest, so no comparison of secret material happens in Python. Revoking a key is deleting
its KV entry: nothing is cached in the isolate, so revocation is visible as soon as KV
propagates it (Cloudflare documents up to 60 s across locations).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from edge_kv.core.errors import EdgeKvError
from edge_kv.edge.env import env_binding
from edge_kv.edge.runtime import kv_get

__all__ = [
    "API_KEY_HEADER",
    "ApiKeyRecord",
    "UnknownApiKey",
    "api_key_kv_key",
    "api_key_record",
    "api_key_subject",
    "hash_api_key",
]

API_KEY_HEADER = "x-api-key"
KV_PREFIX = "apikey:"
MAX_API_KEY_BYTES = 256


class UnknownApiKey(EdgeKvError):
    """An API key was presented but is not known (401)."""

    status = 401
    code = "unauthorized"


def hash_api_key(key: str) -> str:
    """The hex SHA-256 digest under which ``key`` is stored."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def api_key_kv_key(key: str) -> str:
    """The KV key that holds ``key``'s subject (what an admin writes when issuing a key)."""
    return KV_PREFIX + hash_api_key(key)


async def api_key_subject(env: Any, headers: Any, *, binding_var: str = "EDGE_KV_LIMITS_KV") -> str | None:
    """The subject of the ``X-Api-Key`` presented in ``headers``, authenticated against KV
    (see :func:`api_key_record`).

    No header: anonymous (``None``); an unknown, oversized or expired key: :class:`UnknownApiKey`.
    The KV namespace is the one named by the ``binding_var`` var (default binding ``KV``).
    """
    presented = headers.get(API_KEY_HEADER)
    if not presented:
        return None
    return (await api_key_record(env, presented, binding_var=binding_var)).subject


@dataclass(frozen=True)
class ApiKeyRecord:
    subject: str
    scopes: tuple[str, ...] = ()
    owner: str | None = None
    expires_at: float | None = None


def _record(stored: str) -> ApiKeyRecord | None:
    if not stored.startswith("{"):
        return ApiKeyRecord(stored)
    try:
        data = json.loads(stored)
    except ValueError:
        return None
    subject, scopes = data.get("subject"), data.get("scopes", [])
    expires, owner = data.get("expires_at"), data.get("owner")
    if not isinstance(subject, str) or not subject or not isinstance(scopes, list):
        return None
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, (int, float))):
        return None
    return ApiKeyRecord(
        subject,
        tuple(s for s in scopes if isinstance(s, str)),
        owner if isinstance(owner, str) else None,
        None if expires is None else float(expires),
    )


async def api_key_record(
    env: Any, presented: str, *, binding_var: str = "EDGE_KV_LIMITS_KV", now: float | None = None
) -> ApiKeyRecord:
    """What ``presented`` authenticates; :class:`UnknownApiKey` if unknown, malformed in
    storage or expired."""
    if not presented or len(presented) > MAX_API_KEY_BYTES:
        raise UnknownApiKey("unknown API key")
    kv = env_binding(env, binding_var, "KV")
    if kv is None:
        raise UnknownApiKey("unknown API key (no KV namespace holds API keys)")
    stored = await kv_get(kv, api_key_kv_key(presented))
    record = _record(stored) if stored else None
    if record is None:
        raise UnknownApiKey("unknown API key")
    if record.expires_at is not None and record.expires_at <= (time.time() if now is None else now):
        raise UnknownApiKey("the API key has expired")
    return record
