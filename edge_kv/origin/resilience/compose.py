"""The one correct stacking order: ``retry( breaker( bulkhead( call ) ) )``.

* The bulkhead is innermost so a call holds a slot only while it actually runs, not
  while it sleeps between retries; a full bulkhead is a local refusal (not a
  dependency failure: the breaker ignores it, the retry does not retry it).
* The breaker sees every attempt, so retries of a failing dependency count toward
  opening it; once it is open, :class:`~.errors.CircuitOpenError` ends the retry loop
  at once.
* The retry is outermost and owns the budget and the deadline.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from edge_kv.origin.resilience.breaker import CircuitBreaker
from edge_kv.origin.resilience.bulkhead import Bulkhead
from edge_kv.origin.resilience.retry_policy import RetryPolicy

P = ParamSpec("P")
T = TypeVar("T")


class Resilience:
    """Apply any of retry, breaker and bulkhead, always in the documented order."""

    def __init__(
        self,
        *,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        bulkhead: Bulkhead | None = None,
    ) -> None:
        self.retry = retry
        self.breaker = breaker
        self.bulkhead = bulkhead

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        async def attempt() -> T:
            if self.bulkhead is None:
                return await fn(*args, **kwargs)
            return await self.bulkhead.call(fn, *args, **kwargs)

        async def guarded() -> T:
            if self.breaker is None:
                return await attempt()
            return await self.breaker.call(attempt)

        if self.retry is None:
            return await guarded()
        return await self.retry.call(guarded)

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.call(fn, *args, **kwargs)

        return wrapper
