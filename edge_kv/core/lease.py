"""Lock lease arithmetic shared by the Redis lock, Redlock and the Durable Object lock.

A lease is held by an ``owner`` (an unguessable token chosen by the acquirer) until
``expires_at_ms``. Every grant carries a fencing token that is strictly greater than
every token granted before for the same resource; storage guarded by the lock accepts
a write only if its token is higher than the highest it has seen, or equal to it and
from the owner that presented it first (:func:`fencing_accepts`). That, not the TTL, is
what makes a holder that was paused past its lease harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from edge_kv.core.errors import InvalidInput, LockNotOwned
from edge_kv.core.validate import check_positive_int

DEFAULT_DRIFT_FACTOR = 0.01
DRIFT_FLOOR_MS = 2


def quorum(n: int) -> int:
    """Majority of ``n`` independent nodes: ``n // 2 + 1``."""
    check_positive_int("n", n)
    return n // 2 + 1


def drift_ms(ttl_ms: int, drift_factor: float = DEFAULT_DRIFT_FACTOR) -> int:
    """Clock-drift allowance for a lease of ``ttl_ms`` (Redlock: ttl * factor + 2 ms)."""
    return int(ttl_ms * drift_factor) + DRIFT_FLOOR_MS


def redlock_validity_ms(ttl_ms: int, elapsed_ms: int, drift_factor: float = DEFAULT_DRIFT_FACTOR) -> int:
    """Time the holder may still rely on the lock after acquiring it in ``elapsed_ms``.

    Non-positive means the acquisition must be treated as failed and released.
    """
    return ttl_ms - elapsed_ms - drift_ms(ttl_ms, drift_factor)


def fencing_accepts(highest_seen: int | None, token: int, seen_owner: str = "", owner: str = "") -> bool:
    """Whether guarded storage may accept a write carrying ``token`` from ``owner``.

    The storage keeps the highest token it has seen and ``seen_owner``, the owner that
    first presented it (``""`` = a caller that gave no owner). A higher token is accepted
    (a newer holder: the fence moves to it and its owner); a lower one is refused (a
    newer holder has been granted the resource). An equal token is accepted only from
    the same owner (one holder writing several times): a token issued twice (e.g. a
    majority of Redlock nodes restarted without persistence) belongs at the storage to
    the first owner that used it, and the other holder is refused like a stale one, so
    two holders' writes never interleave.
    """
    if highest_seen is None or token > highest_seen:
        return True
    return token == highest_seen and owner == seen_owner


@dataclass(frozen=True, slots=True)
class Lease:
    owner: str
    token: int
    expires_at_ms: int

    def remaining_ms(self, now_ms: int) -> int:
        return max(0, self.expires_at_ms - now_ms)


@dataclass(frozen=True, slots=True)
class LeaseState:
    """Persisted state of one lockable resource: the current lease and the last token.

    ``last_token`` only ever grows, even across expiry and release, so tokens stay
    strictly increasing for the life of the stored state.
    """

    lease: Lease | None = None
    last_token: int = 0

    def holder(self, now_ms: int) -> Lease | None:
        """The lease in force at ``now_ms``, or ``None`` if free or expired."""
        if self.lease is not None and self.lease.expires_at_ms > now_ms:
            return self.lease
        return None

    def acquire(self, owner: str, ttl_ms: int, now_ms: int) -> tuple[Lease | None, LeaseState]:
        """Grant a new lease if the resource is free (or its lease expired).

        Re-acquiring by the current owner is refused like any other contender: a lock
        is not re-entrant, and silently re-granting would hide a bug.
        """
        check_positive_int("ttl_ms", ttl_ms)
        if not owner:
            raise InvalidInput("owner must not be empty")
        if self.holder(now_ms) is not None:
            return None, self
        token = self.last_token + 1
        lease = Lease(owner, token, now_ms + ttl_ms)
        return lease, LeaseState(lease, token)

    def extend(self, owner: str, ttl_ms: int, now_ms: int) -> tuple[Lease, LeaseState]:
        """Push the expiry to ``now + ttl_ms``; only the live owner may. Token unchanged."""
        check_positive_int("ttl_ms", ttl_ms)
        current = self.holder(now_ms)
        if current is None or current.owner != owner:
            raise LockNotOwned("lease is not held by this owner (expired, released or never acquired)")
        lease = replace(current, expires_at_ms=now_ms + ttl_ms)
        return lease, replace(self, lease=lease)

    def release(self, owner: str, now_ms: int) -> LeaseState:
        """Free the resource; only the live owner may."""
        current = self.holder(now_ms)
        if current is None or current.owner != owner:
            raise LockNotOwned("lease is not held by this owner (expired, released or never acquired)")
        return replace(self, lease=None)
