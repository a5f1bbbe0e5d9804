"""The errors of the event-sourcing package, under the project's root
(:mod:`edge_kv.core.errors`).

:class:`ConcurrencyError` is the optimistic-concurrency refusal: nothing was written, so
reloading and re-running the command is always safe (:func:`~.retry.retry_on_conflict`
does it). :class:`DomainError` is what aggregate commands raise to refuse a command; it is
never retried.
"""

from __future__ import annotations

from edge_kv.core.errors import Conflict, EdgeKvError, Unavailable

__all__ = ["ConcurrencyError", "DomainError", "EventStoreUnavailable"]


class ConcurrencyError(Conflict):
    """An append named an expected version that is not the stream's current version.

    ``expected`` is the version the writer based its decision on, ``actual`` the stream's
    version read right after the refusal (it may have moved again since). Nothing of the
    refused append was written, its ``in_transaction`` hook included. 409."""

    code = "event_stream_conflict"

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        super().__init__(f"stream {stream!r}: expected version {expected}, but it is at {actual}")
        self.stream = stream
        self.expected = expected
        self.actual = actual


class DomainError(EdgeKvError):
    """A command refused by an aggregate's own rules (an overdraft, a cancelled order).
    Subclass it per rule. Never retried. 422."""

    status = 422
    code = "domain_rule_violated"


class EventStoreUnavailable(Unavailable):
    """PostgreSQL could not be reached or the connection broke mid-statement. For an
    append, whether it committed is unknown: read the stream before repeating it. 503."""

    code = "event_store_unavailable"
