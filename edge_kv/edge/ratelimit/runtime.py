"""Loading the limit configuration inside a Worker, with no redeploy needed to change it.

Sources, later ones winning:

1. ``EDGE_KV_LIMITS`` var (a JSON string in ``wrangler.toml [vars]``), changed by
   ``wrangler deploy`` or in the dashboard (a new version, no code change);
2. the KV value at the key named by ``EDGE_KV_LIMITS_KV_KEY`` in the KV namespace bound
   as ``EDGE_KV_LIMITS_KV`` (default ``KV``): ``wrangler kv key put`` changes limits
   within ``EDGE_KV_LIMITS_CACHE_S`` seconds (default 10; how long an isolate keeps
   what it read) plus KV propagation.

A KV document that does not parse is logged and ignored (the var's limits stay in
force) so a bad edit cannot take the limiter down; a bad var is a deploy error and
makes limited routes answer 500 until fixed.
"""

from __future__ import annotations

import time
from typing import Any

from edge_kv.edge.ratelimit.config import ConfigError, LimitsConfig, load_config

DEFAULT_CACHE_S = 10.0


def env_str(env: Any, name: str) -> str | None:
    """A string var from ``env``, ``None`` when unset or empty."""
    value = getattr(env, name, None)
    if value is None:
        return None
    text = str(value)
    return text or None


def env_flag(env: Any, name: str) -> bool:
    return (env_str(env, name) or "").lower() in ("1", "true", "yes", "on")


def env_int(env: Any, name: str, default: int, lo: int, hi: int) -> int:
    """An integer var; ``ConfigError`` if set to something else or out of [lo, hi]."""
    raw = env_str(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


class ConfigSource:
    """Per-isolate cache of the parsed configuration (keep one at module scope)."""

    def __init__(self) -> None:
        self._config: LimitsConfig | None = None
        self._var_text: str | None = None
        self._kv_text: str | None = None
        self._loaded_at = 0.0

    async def get(self, env: Any) -> LimitsConfig:
        """The configuration in force; ``ConfigError`` if the var itself is invalid."""
        var_text = env_str(env, "EDGE_KV_LIMITS") or "{}"
        try:
            ttl = float(env_str(env, "EDGE_KV_LIMITS_CACHE_S") or DEFAULT_CACHE_S)
        except ValueError:
            ttl = DEFAULT_CACHE_S
        fresh = time.monotonic() - self._loaded_at < ttl
        if self._config is not None and fresh and var_text == self._var_text:
            return self._config
        kv_text = await self._read_kv(env)
        config: LimitsConfig | None = None
        if kv_text:
            try:
                config = load_config(kv_text)
            except ConfigError as exc:
                print(f"edge_kv: ignoring invalid limit configuration in KV: {exc}")
        if config is None:
            config = load_config(var_text)
        self._config, self._var_text, self._kv_text = config, var_text, kv_text
        self._loaded_at = time.monotonic()
        return config

    async def _read_kv(self, env: Any) -> str | None:
        key = env_str(env, "EDGE_KV_LIMITS_KV_KEY")
        if key is None:
            return None
        kv = getattr(env, env_str(env, "EDGE_KV_LIMITS_KV") or "KV", None)
        if kv is None:
            return None
        try:
            value = await kv.get(key)
        except Exception as exc:
            print(f"edge_kv: could not read limit configuration from KV: {exc}")
            return self._kv_text
        return value if isinstance(value, str) else None

    def invalidate(self) -> None:
        self._config = None


def service_auth_error(env: Any, authorization: str | None) -> tuple[int, str] | None:
    """Check the bearer token of the service API (explicit-key limits, locks over HTTP).

    The API is refused (503) until the ``EDGE_KV_SERVICE_TOKEN`` secret is set, then needs
    ``Authorization: Bearer <token>`` (401 otherwise). Returns ``(status, detail)`` or
    ``None`` when the caller may proceed. Comparison is constant-time.
    """
    import hmac

    token = env_str(env, "EDGE_KV_SERVICE_TOKEN")
    if token is None:
        return 503, "the service API is disabled: set the EDGE_KV_SERVICE_TOKEN secret"
    presented = (authorization or "").strip()
    if not presented.lower().startswith("bearer "):
        return 401, "missing 'Authorization: Bearer <token>'"
    if not hmac.compare_digest(presented[7:].strip().encode(), token.encode()):
        return 401, "invalid service token"
    return None
