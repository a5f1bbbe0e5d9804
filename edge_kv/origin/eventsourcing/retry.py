"""Retry on conflict: reload and re-run a command when its append lost a race.

A :class:`~.errors.ConcurrencyError` means nothing was written, so running the whole
attempt again (load the aggregate afresh, decide again on the new state, append) is
always safe and converges as long as writers are not starved; the retry is bounded by a
:class:`~edge_kv.origin.resilience.retry_policy.RetryPolicy` (attempts, total time,
jittered backoff so the losers do not collide again in lockstep).

Only ``ConcurrencyError`` is retried. A domain error is the answer; and a connection error
during an append leaves its outcome unknown, so re-running the command could apply it
twice (callers who want that retried use an idempotency key or event ids).
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import TypeVar

from edge_kv.core.backoff import NO_RETRY, RETRY, FullJitter, RetryVerdict
from edge_kv.origin.resilience.retry_policy import RetryPolicy

from .errors import ConcurrencyError

__all__ = ["conflict_policy", "retry_on_conflict"]

T = TypeVar("T")


def _only_conflicts(exc: BaseException, now: float) -> RetryVerdict:
    return RETRY if isinstance(exc, ConcurrencyError) else NO_RETRY


def conflict_policy(policy: RetryPolicy | None = None) -> RetryPolicy:
    """``policy`` (a copy sharing its metrics, budget and clock) retrying exactly
    :class:`~.errors.ConcurrencyError`; default: up to 10 attempts within 10 s, full
    jitter from 2 ms capped at 200 ms."""
    if policy is None:
        return RetryPolicy(
            max_attempts=10, max_total=10.0, backoff=FullJitter(base=0.002, cap=0.2), classify=_only_conflicts
        )
    derived = copy.copy(policy)
    derived.classify = _only_conflicts
    derived.classify_result = None
    return derived


async def retry_on_conflict(attempt: Callable[[], Awaitable[T]], *, policy: RetryPolicy | None = None) -> T:
    """Run ``attempt()`` (which must load fresh state each time) until it does not raise
    :class:`~.errors.ConcurrencyError`, within ``policy``'s bounds; the last error is
    raised when they run out."""
    return await conflict_policy(policy).call(attempt)
