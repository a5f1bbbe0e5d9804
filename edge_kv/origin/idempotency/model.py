"""Records, results, errors and the store protocol shared by every idempotency backend.

A key is either *in flight* (a lease held by the request that is executing, carrying an
owner token and a lease deadline) or *done* (the stored response, kept until the TTL).
Stores make the transitions atomic; :mod:`.service` decides what to do with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from edge_kv.core.errors import Conflict, EdgeKvError, Unavailable


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """What a replay gives back: status, headers (name, value; latin-1 strings as on the
    wire) and the exact body bytes."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Record:
    """The stored state of one scoped key: ``response is None`` means in flight."""

    fingerprint: str
    response: StoredResponse | None
    expires_in_ms: int

    @property
    def done(self) -> bool:
        return self.response is not None


@dataclass(frozen=True, slots=True)
class BeginResult:
    """``acquired``: the caller now holds the in-flight lease and must execute, then
    ``complete`` or ``release``. Otherwise ``record`` is what is already there."""

    acquired: bool
    record: Record | None = None


class IdempotencyError(EdgeKvError):
    """Base class of the idempotency errors (an :class:`~edge_kv.core.errors.EdgeKvError`:
    each subclass carries its HTTP ``status`` hint and a stable ``code``)."""

    status = 409
    code = "idempotency_error"


class FingerprintMismatch(IdempotencyError):
    """The key was first used with a different request (HTTP 422)."""

    status = 422
    code = "idempotency_key_reused"


class InFlight(IdempotencyError, Conflict):
    """The first request with this key is still executing (HTTP 409)."""

    status = 409
    code = "idempotency_in_flight"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StoreUnavailable(IdempotencyError, Unavailable):
    """The backing store could not be reached or answered with an error. Callers fail
    closed by default (HTTP 503): executing without the check could run a request twice."""

    status = 503
    code = "idempotency_store_unavailable"


class IdempotencyStore(Protocol):
    """Atomic transitions of a scoped key. Every method raises :class:`StoreUnavailable`
    (never a driver exception) when the backend fails."""

    async def begin(self, key: str, fingerprint: str, token: str, lease_ms: int) -> BeginResult:
        """Create the in-flight mark if the key is free (absent or expired), else report it."""
        ...

    async def complete(self, key: str, token: str, response: StoredResponse, ttl_ms: int) -> bool:
        """Turn our in-flight mark into a done record; False if the mark is no longer ours."""
        ...

    async def release(self, key: str, token: str) -> bool:
        """Delete our in-flight mark (errors are not stored, so the client may retry)."""
        ...

    async def extend(self, key: str, token: str, lease_ms: int) -> bool:
        """Push our lease deadline to now + lease_ms; False if the mark is no longer ours."""
        ...

    async def get(self, key: str) -> Record | None:
        """The live record, if any."""
        ...
