"""Retry with exponential backoff and jitter, error classification, deadlines and a budget.

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
"""

from __future__ import annotations

import email.utils
import functools
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar

from edge_kv.origin.resilience.budget import RetryBudget
from edge_kv.origin.resilience.clock import SYSTEM_CLOCK, Clock
from edge_kv.origin.resilience.errors import ResilienceError

P = ParamSpec("P")
T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({408, 429, 502, 503, 504})


# -- backoff ---------------------------------------------------------------------------
class Backoff(Protocol):
    def delay(self, retry: int, previous: float, rng: random.Random) -> float:
        """Sleep before retry number ``retry`` (1-based); ``previous`` is the last delay."""
        ...


@dataclass(frozen=True)
class FullJitter:
    """``uniform(0, min(cap, base * 2**(retry-1)))`` (AWS "full jitter")."""

    base: float = 0.1
    cap: float = 10.0

    def delay(self, retry: int, previous: float, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.cap, self.base * float(2 ** min(retry - 1, 60))))


@dataclass(frozen=True)
class DecorrelatedJitter:
    """``min(cap, uniform(base, 3 * previous))`` (AWS "decorrelated jitter")."""

    base: float = 0.1
    cap: float = 10.0

    def delay(self, retry: int, previous: float, rng: random.Random) -> float:
        return min(self.cap, rng.uniform(self.base, max(self.base, previous) * 3))


@dataclass(frozen=True)
class Exponential:
    """``min(cap, base * 2**(retry-1))`` without jitter (predictable; avoid under load)."""

    base: float = 0.1
    cap: float = 10.0

    def delay(self, retry: int, previous: float, rng: random.Random) -> float:
        return min(self.cap, self.base * float(2 ** min(retry - 1, 60)))


# -- classification --------------------------------------------------------------------
@dataclass(frozen=True)
class RetryVerdict:
    """``retry``: try again? ``after``: the server's minimum wait in seconds, if it said."""

    retry: bool
    after: float | None = None


NO_RETRY = RetryVerdict(False)
RETRY = RetryVerdict(True)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date
    (RFC 9110 §10.2.3), relative to wall time ``now``. ``None`` when absent or invalid;
    a date in the past gives 0."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def classify_status(
    status: int,
    headers: Mapping[str, str] | None = None,
    *,
    now: float,
    retry_statuses: Iterable[int] = RETRYABLE_STATUSES,
) -> RetryVerdict:
    """Retry decision for an HTTP status; ``Retry-After`` is read for retryable ones."""
    if status not in retry_statuses:
        return NO_RETRY
    after = parse_retry_after(headers.get("retry-after") if headers is not None else None, now)
    return RetryVerdict(True, after)


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
        classify: Callable[[BaseException, float], RetryVerdict] = default_classifier,
        classify_result: Callable[[Any, float], RetryVerdict] | None = None,
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
