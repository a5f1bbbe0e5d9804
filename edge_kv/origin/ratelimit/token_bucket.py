"""``TokenBucketLimiter``: the one-limit quick start over :class:`~.limiter.RateLimiter`.

::

    limiter = TokenBucketLimiter(redis_client, capacity=100, refill_rate=10)
    if await limiter.is_allowed(f"user:{user_id}"):
        ...
"""

from __future__ import annotations

from typing import Any

from edge_kv.core.ratelimit import TokenBucket
from edge_kv.core.validate import MAX_KEY_LENGTH
from edge_kv.origin.ratelimit.limiter import RateLimiter

__all__ = ["TokenBucketLimiter"]


class TokenBucketLimiter(RateLimiter):
    """A :class:`RateLimiter` with one :class:`~edge_kv.core.ratelimit.TokenBucket` tier:
    each key may burst to ``capacity`` requests and earns ``refill_rate`` requests per
    second back (one Lua round trip per decision, time from the Redis server).

    :meth:`is_allowed` answers yes or no; :meth:`hit` (inherited) gives the whole
    decision with the ``RateLimit`` / ``Retry-After`` headers, and the instance works with
    :class:`~.middleware.RateLimitMiddleware` like any ``RateLimiter``. ``redis`` is a
    ``redis.asyncio`` client; ``name`` names the tier in the headers and in the state key;
    ``timeout``, ``fail_open``, ``prefix``, ``max_key_length`` and ``autopipeline`` are
    ``RateLimiter``'s.
    Bad arguments (``capacity`` not a positive integer, a bad key or cost) raise ``ValueError``.
    """

    def __init__(
        self,
        redis: Any,
        capacity: int,
        refill_rate: float,
        *,
        name: str = "default",
        prefix: str = "edge_kv:rl:",
        timeout: float = 0.25,
        fail_open: bool = False,
        max_key_length: int = MAX_KEY_LENGTH,
        autopipeline: bool = True,
    ) -> None:
        self.bucket = TokenBucket(capacity, refill_rate, name=name)
        super().__init__(
            redis,
            self.bucket,
            prefix=prefix,
            timeout=timeout,
            fail_open=fail_open,
            max_key_length=max_key_length,
            autopipeline=autopipeline,
        )

    async def is_allowed(self, key: str, cost: int = 1) -> bool:
        """Spend ``cost`` tokens of ``key``'s bucket if it has them: ``True`` when the
        request may go ahead. Redis unreachable within ``timeout``: ``True`` with
        ``fail_open=True``, else :class:`~.limiter.RateLimiterUnavailable` (503)."""
        return (await self.hit(key, cost)).allowed
