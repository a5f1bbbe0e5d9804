"""What RedisLock and Redlock share: blocking acquire with jittered retry, owner state,
auto-renew task, async context manager. Subclasses supply one acquisition attempt,
one extend and one release against their backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType

from edge_kv.core.lease import DEFAULT_DRIFT_FACTOR, redlock_validity_ms
from edge_kv.core.validate import check_key, check_positive_int, check_positive_number
from edge_kv.origin.locks._io import check_op_timeout
from edge_kv.origin.locks.errors import LockAcquireTimeout, LockError, LockNotOwned, LockUnavailable

DEFAULT_TTL_MS = 30_000
DEFAULT_BLOCKING_TIMEOUT_S = 10.0
DEFAULT_RETRY_DELAY_MS = (10, 50)
DEFAULT_RENEW_FRACTION = 1 / 3


@dataclass(frozen=True, slots=True)
class Attempt:
    """Outcome of one acquisition attempt.

    ``token`` is the fencing token on success, ``None`` when refused. ``available`` is
    False when the backend (or a quorum of it) did not answer. ``holder_pttl_ms`` is the
    current holder's remaining TTL when known (> 0), used to shorten the retry sleep.
    ``validity_ms`` is how long the caller may rely on a granted lease.
    """

    token: int | None
    available: bool = True
    holder_pttl_ms: int = 0
    validity_ms: int = 0
    detail: str = ""


class _Unset:
    pass


_UNSET = _Unset()


class LeaseLock(ABC):
    """An exclusive, expiring lock on ``name`` with fencing tokens (not re-entrant).

    One object holds at most one lease at a time. ``token`` is the fencing token of the
    current lease: pass it to :class:`~edge_kv.origin.locks.fencing.FencedStore` writes.
    """

    def __init__(
        self,
        name: str,
        *,
        ttl_ms: int = DEFAULT_TTL_MS,
        blocking_timeout: float | None = DEFAULT_BLOCKING_TIMEOUT_S,
        retry_delay_ms: tuple[int, int] = DEFAULT_RETRY_DELAY_MS,
        auto_renew: bool = False,
        renew_fraction: float = DEFAULT_RENEW_FRACTION,
        drift_factor: float = DEFAULT_DRIFT_FACTOR,
        op_timeout: float,
        namespace: str,
    ) -> None:
        self.name = check_key(name)
        self.namespace = check_key(namespace)
        self.ttl_ms = check_positive_int("ttl_ms", ttl_ms)
        if blocking_timeout is not None and (
            isinstance(blocking_timeout, bool)
            or not isinstance(blocking_timeout, (int, float))
            or not 0 <= blocking_timeout < float("inf")
        ):
            raise ValueError(
                f"blocking_timeout must be None or a finite number >= 0, got {blocking_timeout!r}"
            )
        self.blocking_timeout = blocking_timeout
        lo, hi = retry_delay_ms
        check_positive_int("retry_delay_ms[0]", lo)
        check_positive_int("retry_delay_ms[1]", hi)
        if lo > hi:
            raise ValueError(f"retry_delay_ms must be (min, max) with min <= max, got {retry_delay_ms}")
        self.retry_delay_ms = (lo, hi)
        self.auto_renew = bool(auto_renew)
        check_positive_number("renew_fraction", renew_fraction)
        if renew_fraction >= 1:
            raise ValueError(f"renew_fraction must be in (0, 1), got {renew_fraction}")
        self.renew_fraction = renew_fraction
        if not 0 <= drift_factor < 0.5:
            raise ValueError(f"drift_factor must be in [0, 0.5), got {drift_factor}")
        self.drift_factor = drift_factor
        self.op_timeout = check_op_timeout(op_timeout)
        # One hash tag for both keys so they share a Redis Cluster slot.
        self.key = f"{self.namespace}:{{{self.name}}}"
        self.counter_key = f"{self.key}:token"
        self._owner: str | None = None
        self._token: int | None = None
        self._deadline = 0.0  # time.monotonic() after which the lease must not be relied on
        self._renew_task: asyncio.Task[None] | None = None
        self._lost = False

    # -- backend hooks -------------------------------------------------------------------
    @abstractmethod
    async def _attempt(self, owner: str, until: float) -> Attempt:
        """One acquisition attempt with ``owner``; must leave nothing behind on refusal
        (or leave it to expire by TTL) and return by ``until`` (``time.monotonic()``);
        :meth:`_budget` gives each round trip its share."""

    @abstractmethod
    async def _extend(self, owner: str, ttl_ms: int) -> int:
        """Extend; return the validity in ms. Raise LockNotOwned / LockUnavailable."""

    @abstractmethod
    async def _release(self, owner: str) -> None:
        """Release; raise LockNotOwned / LockUnavailable."""

    # -- state ---------------------------------------------------------------------------
    @property
    def token(self) -> int | None:
        """Fencing token of the lease this object holds, ``None`` if none."""
        return self._token

    @property
    def owner(self) -> str | None:
        """The random owner value stored in Redis for the current lease."""
        return self._owner

    @property
    def held(self) -> bool:
        """Whether this object holds a lease it may still rely on (local clock)."""
        return self._owner is not None and time.monotonic() < self._deadline

    @property
    def lost(self) -> bool:
        """Set by the auto-renew task when the lease could not be kept."""
        return self._lost

    def remaining_ms(self) -> int:
        """Validity left on the current lease by the local monotonic clock (0 if none)."""
        if self._owner is None:
            return 0
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    # -- operations ----------------------------------------------------------------------
    def _budget(self, until: float) -> float:
        """Seconds the next round trip may take: ``op_timeout``, cut at ``until``."""
        return max(0.0, min(self.op_timeout, until - time.monotonic()))

    async def try_acquire(self) -> int | None:
        """One attempt: the fencing token, or ``None`` if someone else holds the lock.
        Returns within ``op_timeout``.

        Raises :class:`LockUnavailable` if the backend does not answer.
        """
        await self._check_free()
        attempt = await self._one_attempt(time.monotonic() + self.op_timeout)
        if attempt.token is None and not attempt.available:
            raise LockUnavailable(f"lock {self.name!r}: {attempt.detail or 'backend unavailable'}")
        return attempt.token

    async def acquire(self, *, blocking_timeout: float | _Unset | None = _UNSET) -> int:
        """Acquire, retrying with jitter until ``blocking_timeout`` seconds have passed
        (default: the constructor's; ``None`` waits forever, ``0`` tries once).

        Returns the fencing token. Raises :class:`LockAcquireTimeout` if the lock stayed
        held by others, :class:`LockUnavailable` if the last attempt could not reach the
        backend (quorum). Returns or raises within ``blocking_timeout + op_timeout``: an
        attempt starts only before ``blocking_timeout`` has passed, and all of its round
        trips (for Redlock: the fan-out, raising counters, undoing a failed attempt)
        finish within one ``op_timeout`` of the deadline.
        """
        await self._check_free()
        wait = self.blocking_timeout if isinstance(blocking_timeout, _Unset) else blocking_timeout
        if wait is not None and (
            isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait < float("inf")
        ):
            raise ValueError(f"blocking_timeout must be None or a finite number >= 0, got {wait!r}")
        deadline = None if wait is None else time.monotonic() + wait
        until = float("inf") if deadline is None else deadline + self.op_timeout
        lo, hi = self.retry_delay_ms
        while True:
            attempt = await self._one_attempt(until)
            if attempt.token is not None:
                return attempt.token
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                if not attempt.available:
                    raise LockUnavailable(f"lock {self.name!r}: {attempt.detail or 'backend unavailable'}")
                raise LockAcquireTimeout(f"lock {self.name!r} still held by another owner after {wait}s")
            delay = random.uniform(lo, hi) / 1000
            if 0 < attempt.holder_pttl_ms < delay * 1000:
                # Wake just after the holder's lease ends; a little jitter spreads the waiters.
                delay = (attempt.holder_pttl_ms + random.uniform(1, 1 + lo / 5)) / 1000
            if deadline is not None:
                delay = min(delay, max(0.0, deadline - now))
            await asyncio.sleep(delay)

    async def _one_attempt(self, until: float) -> Attempt:
        owner = secrets.token_hex(16)
        started = time.monotonic()
        attempt = await self._attempt(owner, until)
        if attempt.token is not None:
            self._granted(owner, attempt.token, started, attempt.validity_ms)
        return attempt

    def _validity(self, ttl_ms: int, elapsed_s: float) -> int:
        """How long the holder may rely on a lease granted ``elapsed_s`` after asking."""
        return redlock_validity_ms(ttl_ms, int(elapsed_s * 1000), self.drift_factor)

    def _granted(self, owner: str, token: int, started: float, validity_ms: int) -> None:
        self._owner, self._token, self._lost = owner, token, False
        self._deadline = started + validity_ms / 1000
        if self.auto_renew:
            self._renew_task = asyncio.get_running_loop().create_task(
                self._renew_loop(owner), name=f"edge_kv-lock-renew:{self.name}"
            )

    async def extend(self, ttl_ms: int | None = None) -> int:
        """Push the lease to ``ttl_ms`` (default: the lock's TTL) from now; owner only.

        Returns the new validity in ms. Raises :class:`LockNotOwned` if the lease is no
        longer ours (nothing changed) and :class:`LockUnavailable` on an unreachable backend.
        """
        ttl = self.ttl_ms if ttl_ms is None else check_positive_int("ttl_ms", ttl_ms)
        owner = self._owner
        if owner is None:
            raise LockNotOwned(f"lock {self.name!r} is not held by this object")
        started = time.monotonic()
        validity = await self._extend(owner, ttl)
        if self._owner == owner:
            self._deadline = started + validity / 1000
        return validity

    async def release(self) -> None:
        """Release the lease; owner only. Stops the auto-renew task first.

        Raises :class:`LockNotOwned` if the lease had already expired or was taken over
        (the new holder's key is left alone), :class:`LockUnavailable` if the backend
        did not answer (the lease then ends by TTL).
        """
        await self._stop_renew()
        owner = self._owner
        if owner is None:
            raise LockNotOwned(f"lock {self.name!r} is not held by this object")
        self._owner, self._token, self._deadline = None, None, 0.0
        await self._release(owner)

    async def _renew_loop(self, owner: str) -> None:
        interval = self.ttl_ms * self.renew_fraction / 1000
        while self._owner == owner:
            await asyncio.sleep(interval)
            if self._owner != owner:
                return
            try:
                await self.extend()
            except LockNotOwned:
                self._lost = True
                return
            except LockUnavailable:
                # Keep trying while the lease may still be valid; give up after.
                if time.monotonic() >= self._deadline:
                    self._lost = True
                    return

    async def _stop_renew(self) -> None:
        task, self._renew_task = self._renew_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _check_free(self) -> None:
        if self._owner is not None and time.monotonic() < self._deadline:
            raise LockError(
                f"this {type(self).__name__} object already holds {self.name!r}; it is not re-entrant"
            )
        # A lease that ran out locally is forgotten (its key expires or was taken over).
        await self._stop_renew()
        self._owner, self._token, self._deadline = None, None, 0.0

    async def __aenter__(self) -> LeaseLock:
        await self.acquire()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.release()
        except LockError:
            # The body's own exception matters more; otherwise a lease that ended under
            # the critical section is news the caller must get.
            if et is None:
                raise
