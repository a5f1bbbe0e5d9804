"""Origin-side library for CPython services (asyncio first): Redis and PostgreSQL
backends of the patterns the edge also implements. Never shipped to the edge.

Install with ``pip install edge-kv[origin]`` (or only the extras you use: ``redis``,
``postgres``, ``httpx``). The quick-start names are re-exported here and imported on
first use, so ``import edge_kv.origin`` itself needs none of the extras::

    from edge_kv.origin import (
        RedisLock, TokenBucketLimiter, circuit_breaker, idempotent_execute, retry,
    )

    async with RedisLock(redis_client, "payment:order-123"): ...

    @circuit_breaker(failure_threshold=5, recovery_timeout=30)
    @retry(max_attempts=3, base_delay=1.0)
    async def call_external_api(): ...

    return await idempotent_execute(db, idempotency_key, "/payments", process)

    limiter = TokenBucketLimiter(redis_client, capacity=100, refill_rate=10)
    if await limiter.is_allowed(f"user:{user_id}"): ...

The packages: :mod:`.locks`, :mod:`.ratelimit`, :mod:`.idempotency`, :mod:`.resilience`,
:mod:`.eventsourcing`, :mod:`.messaging`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_kv.origin.idempotency import idempotent_execute
    from edge_kv.origin.locks import RedisLock
    from edge_kv.origin.ratelimit import TokenBucketLimiter
    from edge_kv.origin.resilience import circuit_breaker, retry

__all__ = ["RedisLock", "TokenBucketLimiter", "circuit_breaker", "idempotent_execute", "retry"]

# name -> the package that defines it (imported on first access: PEP 562).
_LAZY = {
    "RedisLock": "edge_kv.origin.locks",
    "TokenBucketLimiter": "edge_kv.origin.ratelimit",
    "circuit_breaker": "edge_kv.origin.resilience",
    "idempotent_execute": "edge_kv.origin.idempotency",
    "retry": "edge_kv.origin.resilience",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
