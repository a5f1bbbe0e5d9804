"""Backoff arithmetic, ``Retry-After`` parsing and which HTTP statuses are worth a retry.

Pure and stdlib only (runs on CPython and inside Pyodide): the origin's
:class:`~edge_kv.origin.resilience.retry.RetryPolicy` sleeps what these functions compute,
and an edge Worker can use the same numbers.

* Backoffs (:class:`FullJitter`, the default; :class:`DecorrelatedJitter`;
  :class:`Exponential`) map a 1-based retry number, the previous delay and a
  ``random.Random`` to the next delay in seconds.
* :func:`parse_retry_after` reads an RFC 9110 §10.2.3 ``Retry-After`` value: delay-seconds
  (ASCII digits) or an HTTP-date in any of the three formats a recipient must accept
  (IMF-fixdate, the obsolete RFC 850 form and ANSI C ``asctime()``).
* :func:`classify_status` says whether an HTTP status is retryable (408, 429, 502, 503,
  504 by default) and how long the server asked to wait.
"""

from __future__ import annotations

import email.utils
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Protocol

__all__ = [
    "MAX_RETRY_AFTER_S",
    "NO_RETRY",
    "RETRY",
    "RETRYABLE_STATUSES",
    "Backoff",
    "DecorrelatedJitter",
    "Exponential",
    "FullJitter",
    "RetryVerdict",
    "classify_status",
    "parse_retry_after",
]

RETRYABLE_STATUSES = frozenset({408, 429, 502, 503, 504})

MAX_RETRY_AFTER_S = 10**15
"""delay-seconds values above this (about 31 million years) are read as this value."""


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


# -- Retry-After -------------------------------------------------------------------------
# asctime-date = day-name SP month SP ( 2DIGIT / ( SP DIGIT ) ) SP time-of-day SP year;
# RFC 9110 defines every HTTP-date as UTC, but this form carries no zone of its own.
_ASCTIME = re.compile(r"[A-Za-z]{3} [A-Za-z]{3} [ \d]\d \d\d:\d\d:\d\d \d{4}", re.ASCII)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds or an HTTP-date
    (RFC 9110 §10.2.3), relative to wall time ``now``. ``None`` when absent or invalid;
    a date in the past gives 0."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        digits = value.lstrip("0") or "0"
        return float(int(digits)) if len(digits) <= 15 else float(MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        if not _ASCTIME.fullmatch(value):
            return None  # an explicit "-0000" or no zone at all: not an HTTP-date
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


# -- classification --------------------------------------------------------------------
@dataclass(frozen=True)
class RetryVerdict:
    """``retry``: try again? ``after``: the server's minimum wait in seconds, if it said."""

    retry: bool
    after: float | None = None


NO_RETRY = RetryVerdict(False)
RETRY = RetryVerdict(True)


def classify_status(
    status: int,
    headers: Mapping[str, str] | None = None,
    *,
    now: float,
    retry_statuses: Iterable[int] = RETRYABLE_STATUSES,
) -> RetryVerdict:
    """Retry decision for an HTTP status; ``Retry-After`` is read for retryable ones.
    ``headers`` must answer ``get("retry-after")`` (lower-case name)."""
    if status not in retry_statuses:
        return NO_RETRY
    after = parse_retry_after(headers.get("retry-after") if headers is not None else None, now)
    return RetryVerdict(True, after)
