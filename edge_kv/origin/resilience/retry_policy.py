"""Retry with exponential backoff and jitter, error classification, deadlines and a budget.

The arithmetic (backoffs, ``Retry-After``, retryable HTTP statuses) is
:mod:`edge_kv.core.backoff`; this module runs the loop around an async callable.

What is retried by default (:func:`default_classifier`): timeouts (``TimeoutError``),
connection errors (``ConnectionError``), and :class:`RetryableStatus` raised for
HTTP 408/429/502/503/504 — honouring ``Retry-After`` (delta-seconds or HTTP-date).
Never retried: any other exception (so a 400/401/403/404/422 is never retried), our
own :class:`~.errors.ResilienceError` (an open circuit or a full bulkhead is a local
decision: retrying it would just hammer the breaker), cancellation.

Order of composition: retry *outside* the breaker (``retry(breaker(bulkhead(call)))``);
an open breaker raises :class:`~.errors.CircuitOpenError`, which the retry gives up
on immediately. :class:`~.compose.Resilience` builds exactly that order.

Bounds: at most ``max_attempts`` attempts; no sleep that would end after
``max_total`` seconds from the first attempt (the retry gives up instead); a
``Retry-After`` above ``max_retry_after`` gives up at once; each retry needs a token
from the optional :class:`~.budget.RetryBudget`. When giving up, the last exception is
re-raised or the last result returned.

:func:`retry` is the quick-start spelling: ``@retry(max_attempts=3, base_delay=1.0)``.
"""

from __future__ import annotations

import copy
import functools
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from edge_kv.core.backoff import (
    NO_RETRY,
    RETRY,
    Backoff,
    Exponential,
    FullJitter,
    RetryVerdict,
    classify_status,
)
from edge_kv.core.clock import SYSTEM_CLOCK, Clock
from edge_kv.core.errors import InvalidInput
from edge_kv.origin.resilience.budget import RetryBudget
from edge_kv.origin.resilience.errors import ResilienceError

__all__ = [
    "RetryMetrics",
    "RetryPolicy",
    "RetryableStatus",
    "default_classifier",
    "retry",
]

P = ParamSpec("P")
T = TypeVar("T")

Classifier = Callable[[BaseException, float], RetryVerdict]
ResultClassifier = Callable[[Any, float], RetryVerdict]


class RetryableStatus(Exception):
    """Raise this from a protected call to make a retryable HTTP status retryable."""

    def __init__(self, status: int, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}


def default_classifier(exc: BaseException, now: float) -> RetryVerdict:
    """See the module docstring. ``now`` is wall time (for HTTP-date ``Retry-After``)."""
    if isinstance(exc, ResilienceError) or not isinstance(exc, Exception):
        return NO_RETRY
    if isinstance(exc, RetryableStatus):
        return classify_status(exc.status, exc.headers, now=now)
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return RETRY
    return NO_RETRY


# -- the policy ------------------------------------------------------------------------
@dataclass
class RetryMetrics:
    calls: int = 0
    attempts: int = 0
    retries: int = 0
    succeeded_after_retry: int = 0
    not_retryable: int = 0
    gave_up_attempts: int = 0
    gave_up_deadline: int = 0
    gave_up_budget: int = 0
    gave_up_retry_after: int = 0


class RetryPolicy:
    """Retries an async callable; use :meth:`call` or the instance as a decorator."""

    def __init__(
        self,
        *,
        max_attempts: int = 3,
        max_total: float | None = 30.0,
        backoff: Backoff | None = None,
        classify: Classifier = default_classifier,
        classify_result: ResultClassifier | None = None,
        discard_result: Callable[[Any], Awaitable[None]] | None = None,
        budget: RetryBudget | None = None,
        max_retry_after: float = 60.0,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_retry: Callable[[int, float, BaseException | None], None] | None = None,
    ) -> None:
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
        if max_total is not None and not max_total > 0:
            raise ValueError(f"max_total must be > 0 seconds or None, got {max_total!r}")
        if not max_retry_after >= 0:
            raise ValueError("max_retry_after must be >= 0")
        self.max_attempts = max_attempts
        self.max_total = max_total
        self.backoff: Backoff = backoff or FullJitter()
        self.classify = classify
        self.classify_result = classify_result
        self.discard_result = discard_result
        self.budget = budget
        self.max_retry_after = max_retry_after
        self.clock = clock or SYSTEM_CLOCK
        self.rng = rng or random.Random()
        self.on_retry = on_retry
        self.metrics = RetryMetrics()

    def with_classifiers(
        self,
        *,
        classify: Classifier | None = None,
        classify_result: ResultClassifier | None = None,
        discard_result: Callable[[Any], Awaitable[None]] | None = None,
    ) -> RetryPolicy:
        """A copy of this policy with the given classifiers in place of the *default* ones
        (a custom classifier already set here is kept). The copy shares this policy's
        budget, clock, random generator and metrics; this policy is not changed."""
        derived = copy.copy(self)
        if classify is not None and self.classify is default_classifier:
            derived.classify = classify
        if classify_result is not None and self.classify_result is None:
            derived.classify_result = classify_result
        if discard_result is not None and self.discard_result is None:
            derived.discard_result = discard_result
        return derived

    def _next_delay(self, retry: int, previous: float, verdict: RetryVerdict, started: float) -> float | None:
        """The sleep before ``retry``, or None to give up (metrics updated)."""
        m = self.metrics
        if retry >= self.max_attempts:
            m.gave_up_attempts += 1
            return None
        delay = self.backoff.delay(retry, previous, self.rng)
        if verdict.after is not None:
            if verdict.after > self.max_retry_after:
                m.gave_up_retry_after += 1
                return None
            delay = max(delay, verdict.after)
        if self.max_total is not None and self.clock.monotonic() + delay - started > self.max_total:
            m.gave_up_deadline += 1
            return None
        if self.budget is not None and not self.budget.try_withdraw():
            m.gave_up_budget += 1
            return None
        return delay

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        m = self.metrics
        m.calls += 1
        if self.budget is not None:
            self.budget.deposit()
        started = self.clock.monotonic()
        previous = getattr(self.backoff, "base", 0.0)
        attempt = 0
        while True:
            attempt += 1
            m.attempts += 1
            error: BaseException | None = None
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                error = exc
                verdict = self.classify(exc, self.clock.time())
            else:
                if self.classify_result is None:
                    verdict = NO_RETRY
                else:
                    verdict = self.classify_result(result, self.clock.time())
                if not verdict.retry:
                    if attempt > 1:
                        m.succeeded_after_retry += 1
                    return result
            if not verdict.retry:
                m.not_retryable += 1
                assert error is not None
                raise error
            delay = self._next_delay(attempt, previous, verdict, started)
            if delay is None:
                if error is not None:
                    raise error
                return result
            previous = delay
            if error is None and self.discard_result is not None:
                await self.discard_result(result)
            m.retries += 1
            if self.on_retry is not None:
                self.on_retry(attempt, delay, error)
            await self.clock.sleep(delay)

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.call(fn, *args, **kwargs)

        return wrapper


def retry(
    max_attempts: int = 3,
    base_delay: float = 0.1,
    max_delay: float = 10.0,
    *,
    jitter: bool = True,
    max_total: float | None = 30.0,
    classify: Classifier = default_classifier,
    budget: RetryBudget | None = None,
    max_retry_after: float = 60.0,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    on_retry: Callable[[int, float, BaseException | None], None] | None = None,
) -> RetryPolicy:
    """The quick-start decorator: a :class:`RetryPolicy` with exponential backoff.

    ::

        @retry(max_attempts=3, base_delay=1.0)
        async def call_external_api() -> dict: ...

    ``max_attempts`` counts every attempt (the first included). Before retry *n* it sleeps
    ``uniform(0, min(max_delay, base_delay * 2**(n-1)))`` (full jitter; ``jitter=False``:
    exactly ``min(max_delay, base_delay * 2**(n-1))``), or longer when a
    :class:`RetryableStatus` carries a ``Retry-After``. What is retried is
    :func:`default_classifier` (timeouts, connection errors, 408/429/502/503/504) unless
    ``classify`` says otherwise; ``max_total`` (seconds, ``None`` for no limit) bounds the
    whole call. The remaining arguments are :class:`RetryPolicy`'s.

    The returned policy is the decorator (``policy(fn)``) and can also run calls directly
    (``await policy.call(fn, ...)``); its ``metrics`` count what happened. Stacked under
    ``@circuit_breaker``, the breaker sees one outcome per retried call; for one outcome
    per attempt (the order this package recommends) use :class:`~.compose.Resilience`.
    """
    for name, value in (("base_delay", base_delay), ("max_delay", max_delay)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise InvalidInput(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    backoff: Backoff = (
        FullJitter(base=float(base_delay), cap=float(max_delay))
        if jitter
        else Exponential(base=float(base_delay), cap=float(max_delay))
    )
    return RetryPolicy(
        max_attempts=max_attempts,
        max_total=max_total,
        backoff=backoff,
        classify=classify,
        budget=budget,
        max_retry_after=max_retry_after,
        clock=clock,
        rng=rng,
        on_retry=on_retry,
    )
