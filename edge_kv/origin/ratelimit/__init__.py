"""Origin rate limiting on Redis: one Lua round trip per decision, tiers, ASGI middleware.

The algorithms are :mod:`edge_kv.core.ratelimit` (the same ones the edge runs)::

    from edge_kv.core import TokenBucket, SlidingLog
    from edge_kv.origin.ratelimit import RateLimiter

    limiter = RateLimiter(redis, [TokenBucket(10, 10, name="per-second"),
                                  SlidingLog(1000, 3600, name="per-hour")])
    result = await limiter.hit("user:42")

One token bucket, yes or no::

    limiter = TokenBucketLimiter(redis, capacity=100, refill_rate=10)
    if await limiter.is_allowed(f"user:{user_id}"): ...
"""

from edge_kv.origin.ratelimit.limiter import (
    LIMIT_SCRIPT,
    RateLimiter,
    RateLimiterUnavailable,
    RateLimitResult,
)
from edge_kv.origin.ratelimit.middleware import RateLimitMiddleware, client_ip, header_key
from edge_kv.origin.ratelimit.token_bucket import TokenBucketLimiter

__all__ = [
    "LIMIT_SCRIPT",
    "RateLimitMiddleware",
    "RateLimitResult",
    "RateLimiter",
    "RateLimiterUnavailable",
    "TokenBucketLimiter",
    "client_ip",
    "header_key",
]
