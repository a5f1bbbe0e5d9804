"""Typed errors of the origin locks. Every refusal a caller must handle is a subclass of
:class:`LockError`, so ``except LockError`` is the one catch-all a service needs."""

from __future__ import annotations


class LockError(Exception):
    """Base class of every lock refusal raised by :mod:`edge_kv.origin.locks`."""


class LockNotOwned(LockError):
    """Release or extend by someone who does not hold the lock (never held it, or its
    lease expired and possibly went to somebody else). Nothing was changed."""


class LockAcquireTimeout(LockError):
    """The lock stayed held by someone else for the whole blocking timeout."""


class LockUnavailable(LockError):
    """The backend could not be reached or did not answer within the operation timeout
    (for Redlock: fewer than a quorum of nodes answered). The outcome of the last
    command is unknown; a lease that was in fact granted expires after its TTL."""


class StaleFencingToken(LockError):
    """A fenced write carried a token lower than the highest the storage has seen for the
    resource: a newer holder exists, so this (paused or expired) holder must stop."""

    def __init__(self, resource: str, token: int, highest: int) -> None:
        super().__init__(
            f"fencing token {token} for {resource!r} is stale: storage has already seen {highest}"
        )
        self.resource = resource
        self.token = token
        self.highest = highest
