"""The public API, pinned: each package's ``__all__`` exactly as below.

A rename, addition or removal fails this test until the pin is updated, so API changes are
deliberate (and get a line in CHANGELOG.md). Every exported name must also resolve.
Packages of ``edge_kv.edge`` are imported without the Workers runtime (they must be), and
``import edge_kv.origin`` must not import redis, psycopg or httpx (lazy re-exports).
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PUBLIC: dict[str, set[str]] = {
    "edge_kv": {
        "__version__",
    },
    "edge_kv.core": {
        "BreakerConfig",
        "BreakerDecision",
        "Clock",
        "Conflict",
        "Decision",
        "EdgeKvError",
        "FakeClock",
        "FixedWindow",
        "FullJitter",
        "InvalidInput",
        "Lease",
        "LeaseState",
        "LockAcquireTimeout",
        "LockError",
        "LockNotOwned",
        "LockUnavailable",
        "NotFound",
        "SlidingLog",
        "SlidingWindowCounter",
        "StaleFencingToken",
        "SystemClock",
        "TokenBucket",
        "Unavailable",
        "UpstreamFailed",
        "decide_tiers",
        "error_from_code",
        "fencing_accepts",
        "parse_retry_after",
        "quorum",
        "redlock_validity_ms",
    },
    "edge_kv.edge": {
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
    },
    "edge_kv.edge.runtime": {
        "Cache",
        "DurableObjectNamespace",
        "DurableObjectStorage",
        "DurableObjectStub",
        "Env",
        "KVNamespace",
        "KV_MAX_KEY_BYTES",
        "KV_MAX_TTL_S",
        "KV_MIN_TTL_S",
        "SqlCursor",
        "SqlStorage",
        "call_rpc",
        "check_js_args",
        "check_kv_key",
        "check_kv_ttl",
        "decode_reply",
        "js_object",
        "js_response",
        "kv_delete",
        "kv_get",
        "kv_put",
        "open_cache",
        "request_cf",
        "request_method",
        "resolve",
        "rpc_method",
        "sql_exec",
        "sql_rows",
        "to_py",
    },
    "edge_kv.edge.auth": {
        "API_KEY_HEADER",
        "SERVICE_TOKEN_VAR",
        "ServiceApiDisabled",
        "ServiceTokenRefused",
        "UnknownApiKey",
        "api_key_kv_key",
        "api_key_subject",
        "check_service_token",
        "hash_api_key",
        "require_service_token",
    },
    "edge_kv.edge.ratelimit": {
        "BLOCK_CACHE",
        "BackendError",
        "BlockCache",
        "ConfigError",
        "DurableObjectBackend",
        "EdgeLimiter",
        "ExplicitClockRefused",
        "KvBackend",
        "LIMITS_CONFIG",
        "LimitSpec",
        "LimitVerdict",
        "LimitsConfig",
        "RateLimitObject",
        "RateLimiterRpc",
        "build_limiter",
        "client_ip",
        "enforce",
        "limits_config",
        "load_config",
        "parse_config",
        "refusal",
        "register_service_api",
        "verdict_details",
        "verdict_headers",
    },
    "edge_kv.edge.locks": {
        "EdgeLock",
        "LockBusy",
        "LockLimits",
        "LockObject",
        "LockRecord",
        "LockServiceRpc",
        "check_resource",
        "lock_limits",
        "new_owner",
        "register_service_api",
    },
    "edge_kv.origin": {
        "RedisLock",
        "TokenBucketLimiter",
        "circuit_breaker",
        "idempotent_execute",
        "retry",
    },
    "edge_kv.origin.locks": {
        "FenceResult",
        "FencedStore",
        "LockAcquireTimeout",
        "LockError",
        "LockNotOwned",
        "LockUnavailable",
        "PgAdvisoryLock",
        "RedisLock",
        "Redlock",
        "StaleFencingToken",
        "advisory_key",
        "advisory_transaction",
        "fenced_write",
        "try_xact_lock",
        "xact_lock",
    },
    "edge_kv.origin.ratelimit": {
        "LIMIT_SCRIPT",
        "RateLimitMiddleware",
        "RateLimitResult",
        "RateLimiter",
        "RateLimiterUnavailable",
        "TokenBucketLimiter",
        "client_ip",
        "header_key",
    },
    "edge_kv.origin.idempotency": {
        "BeginResult",
        "ConnectionFactory",
        "DEFAULT_TTL_S",
        "FingerprintMismatch",
        "IdempotencyError",
        "IdempotencyMiddleware",
        "IdempotencyService",
        "IdempotencyStore",
        "InFlight",
        "LayeredStore",
        "MAX_IDEMPOTENCY_KEY_LENGTH",
        "Outcome",
        "PgPool",
        "PostgresDeduplicator",
        "PostgresStore",
        "Processed",
        "Record",
        "RedisDeduplicator",
        "RedisStore",
        "StoreUnavailable",
        "StoredResponse",
        "check_idempotency_key",
        "check_message_id",
        "default_storable",
        "fingerprint",
        "header_principal",
        "idempotent_execute",
        "scoped_key",
    },
    "edge_kv.origin.resilience": {
        "BreakerConfig",
        "BreakerDecision",
        "BreakerMetrics",
        "BreakerProtected",
        "Bulkhead",
        "BulkheadFull",
        "BulkheadMetrics",
        "BulkheadTimeout",
        "CircuitBreaker",
        "CircuitOpenError",
        "Clock",
        "DecorrelatedJitter",
        "Exponential",
        "FakeClock",
        "FullJitter",
        "LocalBreakerStore",
        "Resilience",
        "ResilienceError",
        "RetryBudget",
        "RetryPolicy",
        "RetryVerdict",
        "RetryableStatus",
        "SystemClock",
        "TierLimits",
        "TieredBulkhead",
        "circuit_breaker",
        "classify_status",
        "default_classifier",
        "parse_retry_after",
        "retry",
    },
    "edge_kv.origin.httpsig": {
        "DEFAULT_REQUIRED_COMPONENTS",
        "DEFAULT_REQUIRED_PARAMS",
        "EdgeIdentity",
        "HmacKey",
        "Keyring",
        "MemoryNonceStore",
        "NonceStore",
        "NonceStoreUnavailable",
        "RedisNonceStore",
        "SignatureMiddleware",
        "SignaturePolicy",
        "SignatureRejected",
        "edge_identity",
        "fixed_origin",
        "target_uri_from_scope",
        "verify_request",
    },
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_exported_names_are_pinned(module: str) -> None:
    mod = importlib.import_module(module)
    exported = getattr(mod, "__all__", None)
    assert exported is not None, f"{module} declares no __all__"
    assert len(exported) == len(set(exported)), f"{module}.__all__ has duplicates"
    added, removed = set(exported) - PUBLIC[module], PUBLIC[module] - set(exported)
    assert not added and not removed, f"{module}: added {sorted(added)}, removed {sorted(removed)}"
    missing = [name for name in exported if not hasattr(mod, name)]
    assert not missing, f"{module} exports names it does not define: {missing}"


def test_every_package_declares_all() -> None:
    """No package (a directory with __init__.py) is left without a pinned ``__all__``."""
    from pathlib import Path

    root = Path(importlib.import_module("edge_kv").__file__ or "").parent
    packages = {
        ".".join(p.parent.relative_to(root.parent).parts)
        for p in root.rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert packages <= set(PUBLIC), f"packages without a pinned API: {sorted(packages - set(PUBLIC))}"


def test_importing_the_origin_package_loads_no_optional_dependency() -> None:
    code = (
        "import sys, edge_kv.origin, edge_kv.edge, edge_kv.core;"
        "print(sorted(m for m in ('redis', 'psycopg', 'httpx', 'workers', 'js') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
