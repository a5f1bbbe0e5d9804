"""What a Cloudflare Python Worker composes: routing and problem responses, the runtime
seam, configuration from vars and KV, service-token and API-key auth, rate limits and
locks. Standard library plus the Workers runtime only; runs on Pyodide.

The Durable Object classes live in :mod:`edge_kv.edge.objects` (it imports the runtime
SDK, so it is not imported here); in-memory bindings for unit tests in
:mod:`edge_kv.edge.testing`.
"""

from edge_kv.edge.auth import (
    API_KEY_HEADER,
    ServiceApiDisabled,
    ServiceTokenRefused,
    UnknownApiKey,
    api_key_kv_key,
    api_key_subject,
    hash_api_key,
    require_service_token,
)
from edge_kv.edge.config_source import ConfigSource, ConfigVars
from edge_kv.edge.env import env_binding, env_flag, env_int, env_str
from edge_kv.edge.http import (
    HttpError,
    RouteContext,
    Router,
    bad_request,
    json_response,
    problem_response,
    read_json,
    read_json_object,
    text_response,
)
from edge_kv.edge.locks import EdgeLock, LockBusy
from edge_kv.edge.ratelimit import EdgeLimiter, LimitVerdict, enforce, refusal

__all__ = [
    "API_KEY_HEADER",
    "ConfigSource",
    "ConfigVars",
    "EdgeLimiter",
    "EdgeLock",
    "HttpError",
    "LimitVerdict",
    "LockBusy",
    "RouteContext",
    "Router",
    "ServiceApiDisabled",
    "ServiceTokenRefused",
    "UnknownApiKey",
    "api_key_kv_key",
    "api_key_subject",
    "bad_request",
    "enforce",
    "env_binding",
    "env_flag",
    "env_int",
    "env_str",
    "hash_api_key",
    "json_response",
    "problem_response",
    "read_json",
    "read_json_object",
    "refusal",
    "require_service_token",
    "text_response",
]
