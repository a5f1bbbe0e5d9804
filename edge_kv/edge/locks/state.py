"""The lock object's state machine: a lease (``edge_kv.core.lease``) plus a FIFO wait queue.

One Durable Object holds one resource. Its persisted :class:`LockRecord` is the core
:class:`~edge_kv.core.lease.LeaseState` (current lease and the last fencing token, which
only grows) and an ordered tuple of waiters. All functions here are pure: the object
loads the record, applies one operation with the current time, stores the result and
arms its alarm at :meth:`LockRecord.next_wakeup_ms`.

Waiting is polling with a place in line, not a parked request: a waiter calls
``acquire`` with ``wait_ms`` and gets its 1-based ``position``; it calls again (the
Python client does this every few tens of milliseconds) until it is granted or its
wait runs out. While waiters exist, the lock is granted only to the head of the queue,
so order is first come, first served. A waiter that stops polling for longer than
``poll_grace_ms`` (it crashed or gave up) is dropped, so an abandoned waiter cannot
hold the line. This keeps every object call short, which matters because a Durable
Object handles one event at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from edge_kv.core.errors import InvalidInput, LockNotOwned
from edge_kv.core.lease import Lease, LeaseState
from edge_kv.core.validate import check_positive_int

__all__ = ["AcquireResult", "LockLimits", "LockNotOwned", "LockRecord", "Waiter"]


@dataclass(frozen=True, slots=True)
class LockLimits:
    """Bounds enforced by the object (configured by the Worker, see ``EDGE_KV_LOCK_*`` vars)."""

    max_ttl_ms: int = 300_000
    max_wait_ms: int = 60_000
    max_waiters: int = 256
    poll_grace_ms: int = 2_000

    def check_ttl(self, ttl_ms: object) -> int:
        ttl = check_positive_int("ttl_ms", ttl_ms)
        if ttl > self.max_ttl_ms:
            raise InvalidInput(f"ttl_ms must be <= {self.max_ttl_ms}, got {ttl}")
        return ttl

    def check_wait(self, wait_ms: object) -> int:
        if isinstance(wait_ms, bool) or not isinstance(wait_ms, int) or wait_ms < 0:
            raise InvalidInput(f"wait_ms must be an integer >= 0, got {wait_ms!r}")
        if wait_ms > self.max_wait_ms:
            raise InvalidInput(f"wait_ms must be <= {self.max_wait_ms}, got {wait_ms}")
        return wait_ms


def check_owner(owner: object) -> str:
    """Owner tokens are opaque strings of 8..128 printable ASCII characters."""
    if not isinstance(owner, str) or not 8 <= len(owner) <= 128:
        raise InvalidInput("owner must be a string of 8..128 characters")
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in owner):
        raise InvalidInput("owner must be printable ASCII without spaces")
    return owner


@dataclass(frozen=True, slots=True)
class Waiter:
    owner: str
    deadline_ms: int
    seen_ms: int


@dataclass(frozen=True, slots=True)
class AcquireResult:
    """``lease`` when granted; otherwise ``position`` in the queue (``None``: not queued)."""

    lease: Lease | None
    position: int | None = None
    holder_expires_at_ms: int | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class LockRecord:
    state: LeaseState = field(default_factory=LeaseState)
    waiters: tuple[Waiter, ...] = ()

    # -- queue housekeeping -------------------------------------------------------
    def _pruned(self, now_ms: int, grace_ms: int) -> tuple[Waiter, ...]:
        return tuple(w for w in self.waiters if w.deadline_ms > now_ms and w.seen_ms + grace_ms > now_ms)

    def expire(self, now_ms: int, limits: LockLimits) -> LockRecord:
        """Drop an expired lease and dead waiters (what the alarm does). Token kept."""
        state = self.state
        if state.lease is not None and state.holder(now_ms) is None:
            state = replace(state, lease=None)
        return LockRecord(state, self._pruned(now_ms, limits.poll_grace_ms))

    def next_wakeup_ms(self, limits: LockLimits) -> int | None:
        """When the alarm must fire next: lease expiry or the first waiter to go stale."""
        times = [w.deadline_ms for w in self.waiters]
        times += [w.seen_ms + limits.poll_grace_ms for w in self.waiters]
        if self.state.lease is not None:
            times.append(self.state.lease.expires_at_ms)
        return min(times) if times else None

    # -- operations -------------------------------------------------------------------
    def acquire(
        self, owner: str, ttl_ms: int, now_ms: int, limits: LockLimits, wait_ms: int = 0
    ) -> tuple[AcquireResult, LockRecord]:
        """Grant if free and ``owner`` is first in line; else queue it when ``wait_ms`` > 0."""
        check_owner(owner)
        limits.check_ttl(ttl_ms)
        limits.check_wait(wait_ms)
        record = self.expire(now_ms, limits)
        holder = record.state.holder(now_ms)
        waiting = [w.owner for w in record.waiters]
        head_ok = not waiting or waiting[0] == owner
        if holder is None and head_ok:
            lease, state = record.state.acquire(owner, ttl_ms, now_ms)
            assert lease is not None
            rest = tuple(w for w in record.waiters if w.owner != owner)
            return AcquireResult(lease), LockRecord(state, rest)
        expires = holder.expires_at_ms if holder is not None else None
        if holder is not None and holder.owner == owner:
            return AcquireResult(None, None, expires, "already held by this owner"), record
        if wait_ms == 0:
            # A caller that gives up at once never joins the queue.
            return AcquireResult(None, None, expires, "locked"), record
        if owner in waiting:
            idx = waiting.index(owner)
            waiters = list(record.waiters)
            waiters[idx] = Waiter(owner, now_ms + wait_ms, now_ms)
            return AcquireResult(None, idx + 1, expires, "queued"), LockRecord(record.state, tuple(waiters))
        if len(waiting) >= limits.max_waiters:
            return AcquireResult(None, None, expires, "wait queue is full"), record
        waiters_t = (*record.waiters, Waiter(owner, now_ms + wait_ms, now_ms))
        return AcquireResult(None, len(waiters_t), expires, "queued"), LockRecord(record.state, waiters_t)

    def leave(self, owner: str) -> LockRecord:
        """Remove ``owner`` from the queue (a waiter that gave up)."""
        return replace(self, waiters=tuple(w for w in self.waiters if w.owner != owner))

    def extend(self, owner: str, ttl_ms: int, now_ms: int, limits: LockLimits) -> tuple[Lease, LockRecord]:
        """Owner-only; raises :class:`LockNotOwned`. Fencing token unchanged."""
        check_owner(owner)
        limits.check_ttl(ttl_ms)
        lease, state = self.state.extend(owner, ttl_ms, now_ms)
        return lease, replace(self, state=state)

    def release(self, owner: str, now_ms: int) -> LockRecord:
        """Owner-only; raises :class:`LockNotOwned`."""
        check_owner(owner)
        return replace(self, state=self.state.release(owner, now_ms))

    # -- persistence -------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        lease = self.state.lease
        return {
            "last_token": self.state.last_token,
            "lease": None if lease is None else [lease.owner, lease.token, lease.expires_at_ms],
            "waiters": [[w.owner, w.deadline_ms, w.seen_ms] for w in self.waiters],
        }

    @classmethod
    def from_json(cls, value: object) -> LockRecord:
        """Decode a stored record; ``ValueError`` if it is not one (never silently reset:
        losing ``last_token`` would break fencing)."""
        if not isinstance(value, dict):
            raise ValueError(f"bad lock record {value!r}")
        try:
            last = value["last_token"]
            raw_lease = value["lease"]
            lease = (
                None if raw_lease is None else Lease(str(raw_lease[0]), int(raw_lease[1]), int(raw_lease[2]))
            )
            waiters = tuple(Waiter(str(o), int(d), int(s)) for o, d, s in value["waiters"])
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"bad lock record {value!r}") from exc
        if isinstance(last, bool) or not isinstance(last, int) or last < 0:
            raise ValueError(f"bad last_token {last!r}")
        return cls(LeaseState(lease, last), waiters)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def loads(cls, text: str | None) -> LockRecord:
        return cls() if not text else cls.from_json(json.loads(text))
