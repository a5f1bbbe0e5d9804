"""The error root every edge_kv package derives from.

Each error carries a ``status`` hint (the HTTP status an edge route or an ASGI middleware
answers with when the error reaches it) and a stable ``code`` (a short machine-readable
name). The pair is what crosses a process boundary (a Durable Object RPC, a JSON reply):
the receiver rebuilds the error from its ``code`` with :func:`error_from_code` instead of
searching message text.

``except EdgeKvError`` catches every deliberate refusal of the library; ``except
Unavailable`` catches every "the backend could not answer" case (Redis down or slow, a
Durable Object unreachable, a breaker open), which callers usually treat alike.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "Conflict",
    "EdgeKvError",
    "InvalidInput",
    "LockAcquireTimeout",
    "LockError",
    "LockNotOwned",
    "LockUnavailable",
    "NotFound",
    "StaleFencingToken",
    "Unavailable",
    "UpstreamFailed",
    "error_from_code",
]


class EdgeKvError(Exception):
    """Root of every error edge_kv raises on purpose.

    ``status`` is an HTTP status hint, ``code`` a stable name that survives serialisation,
    ``detail`` the human-readable message (also ``str(error)``).
    """

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail

    def to_json(self) -> dict[str, Any]:
        """``{"code", "status", "detail"}``: what a Durable Object returns across RPC."""
        return {"code": self.code, "status": self.status, "detail": self.detail}


class InvalidInput(EdgeKvError, ValueError):
    """The caller's input is unusable (a bad argument, a malformed document). 400."""

    status = 400
    code = "invalid_input"


class NotFound(EdgeKvError):
    """The named thing does not exist (an unknown limit, a missing key). 404."""

    status = 404
    code = "not_found"


class Conflict(EdgeKvError):
    """The request is valid but conflicts with the current state. 409."""

    status = 409
    code = "conflict"


class Unavailable(EdgeKvError):
    """A backend could not answer in time (refused, timed out, quorum lost, circuit open).

    The outcome of a write that was in flight is unknown. 503.
    """

    status = 503
    code = "unavailable"


class UpstreamFailed(EdgeKvError):
    """A dependency answered badly or not at all (a crashed Durable Object, a refused
    connection to an origin). 502."""

    status = 502
    code = "upstream_failed"


class LockError(EdgeKvError):
    """Base of every lock refusal, at the edge (Durable Object lock) and at the origin."""

    status = 409
    code = "lock_error"


class LockNotOwned(LockError):
    """Release or extend by someone who does not hold the lock (never held it, or its
    lease expired and possibly went to somebody else). Nothing was changed."""

    code = "lock_not_owned"


class LockAcquireTimeout(LockError):
    """The lock stayed held by someone else for the whole wait."""

    code = "lock_acquire_timeout"


class LockUnavailable(LockError, Unavailable):
    """The lock backend could not be reached or did not answer within the operation
    timeout (for Redlock: fewer than a quorum of nodes answered). A lease that was in
    fact granted expires after its TTL."""

    status = 503
    code = "lock_unavailable"


class StaleFencingToken(LockError):
    """A fenced write carried a token the storage must refuse: a newer holder exists, so
    this (paused or expired) holder must stop."""

    code = "stale_fencing_token"

    def __init__(self, resource: str, token: int, highest: int, reason: str = "") -> None:
        detail = (
            reason or f"fencing token {token} for {resource!r} is stale: storage has already seen {highest}"
        )
        super().__init__(detail)
        self.resource = resource
        self.token = token
        self.highest = highest


def _subclasses(cls: type[EdgeKvError]) -> list[type[EdgeKvError]]:
    found: list[type[EdgeKvError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def error_from_code(code: str, detail: str = "", status: int | None = None) -> EdgeKvError:
    """Rebuild an error sent as ``{"code", "detail"}``: the most specific class with that
    ``code`` whose constructor takes a detail string; an unknown code gives an
    :class:`EdgeKvError` carrying the sent status."""
    classes: list[type[EdgeKvError]] = [EdgeKvError, *_subclasses(EdgeKvError)]
    for cls in classes:
        if cls.__dict__.get("code") == code or (cls is EdgeKvError and code == EdgeKvError.code):
            try:
                made: EdgeKvError = cls(detail)
            except TypeError:
                continue
            return made
    err = EdgeKvError(detail)
    if status is not None:
        err.status = status  # type: ignore[misc]  # instance override of the class hint
    return err
