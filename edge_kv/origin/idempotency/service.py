"""The idempotency protocol, independent of HTTP framework and store.

``await service.execute(key, fingerprint, handler, scope=principal)``:

1. the key is validated (ValueError) and scoped to the principal;
2. the store atomically claims an in-flight mark (a lease with an owner token);
3. if the key already has a record: a different fingerprint raises
   :class:`FingerprintMismatch`; a done record is replayed; an in-flight one raises
   :class:`InFlight` (``in_flight="reject"``) or is polled until it is done, released or
   ``wait_timeout_s`` passes (``in_flight="wait"``);
4. otherwise the handler runs once, while a background task renews the lease every
   ``lease_s / 3`` (so a long handler keeps its mark, and a crashed process's mark
   expires within ``lease_s``);
5. a storable response (by default: status < 500) is stored for ``ttl_s``; a 5xx or an
   exception releases the mark instead, so the client may retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from .fingerprint import MAX_IDEMPOTENCY_KEY_LENGTH, check_idempotency_key, scoped_key
from .model import FingerprintMismatch, IdempotencyStore, InFlight, StoredResponse, StoreUnavailable

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 24 * 3600
"""Stored responses are kept 24 h by default; 24-72 h is the usual range."""


def default_storable(status: int) -> bool:
    """Store everything but server errors: a 4xx is the request's answer, a 5xx may heal."""
    return status < 500


@dataclass(frozen=True, slots=True)
class Outcome:
    """``replayed``: the response came from the store, the handler did not run.
    ``stored``: (fresh executions) the response was saved for replays."""

    response: StoredResponse
    replayed: bool
    stored: bool = False


Handler = Callable[[], Awaitable[StoredResponse]]


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


class IdempotencyService:
    def __init__(
        self,
        store: IdempotencyStore,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        lease_s: float = 10.0,
        renew: bool = True,
        in_flight: Literal["reject", "wait"] = "reject",
        wait_timeout_s: float = 10.0,
        poll_s: float = 0.05,
        storable: Callable[[int], bool] = default_storable,
        max_key_length: int = MAX_IDEMPOTENCY_KEY_LENGTH,
    ) -> None:
        if in_flight not in ("reject", "wait"):
            raise ValueError(f"in_flight must be 'reject' or 'wait', got {in_flight!r}")
        self.store = store
        self.ttl_ms = int(_positive("ttl_s", ttl_s) * 1000)
        self.lease_ms = max(1, int(_positive("lease_s", lease_s) * 1000))
        self.renew = renew
        self.in_flight = in_flight
        self.wait_timeout_s = _positive("wait_timeout_s", wait_timeout_s)
        self.poll_s = _positive("poll_s", poll_s)
        self.storable = storable
        self.max_key_length = int(_positive("max_key_length", max_key_length))

    def check_key(self, key: object) -> str:
        return check_idempotency_key(key, max_length=self.max_key_length)

    async def execute(self, key: str, fingerprint: str, handler: Handler, *, scope: str = "") -> Outcome:
        """Run ``handler`` at most once per (scope, key) within the TTL; see the module doc.

        Raises ValueError (bad key/scope), FingerprintMismatch, InFlight, StoreUnavailable;
        the handler's own exceptions propagate after the mark is released."""
        skey = scoped_key(scope, self.check_key(key))
        deadline = time.monotonic() + self.wait_timeout_s
        while True:
            token = secrets.token_hex(16)
            begun = await self.store.begin(skey, fingerprint, token, self.lease_ms)
            if begun.acquired:
                return await self._run(skey, token, handler)
            record = begun.record
            assert record is not None
            if record.fingerprint != fingerprint:
                raise FingerprintMismatch(
                    "this idempotency key was already used with a different request "
                    "(method, path or body differ)"
                )
            if record.response is not None:
                return Outcome(record.response, replayed=True)
            remaining = deadline - time.monotonic()
            if self.in_flight == "reject" or remaining <= 0:
                retry_after = max(1, min(record.expires_in_ms, self.lease_ms) // 1000)
                raise InFlight("a request with this idempotency key is still being processed", retry_after)
            await asyncio.sleep(min(self.poll_s, remaining))

    async def _run(self, skey: str, token: str, handler: Handler) -> Outcome:
        renewer = asyncio.create_task(self._renew(skey, token)) if self.renew else None
        try:
            response = await handler()
        except BaseException:
            await self._stop(renewer)
            await self._release(skey, token)
            raise
        await self._stop(renewer)
        if not self.storable(response.status):
            await self._release(skey, token)
            return Outcome(response, replayed=False, stored=False)
        try:
            stored = await self.store.complete(skey, token, response, self.ttl_ms)
        except StoreUnavailable as exc:
            # The effect has happened: answer the client anyway. The mark expires with its
            # lease; a retry after that would execute again (logged, so it can be seen).
            log.error("idempotency: could not store the response of %r: %s", skey, exc)
            stored = False
        if not stored:
            log.warning("idempotency: in-flight mark of %r was lost before completion", skey)
        return Outcome(response, replayed=False, stored=stored)

    async def _renew(self, skey: str, token: str) -> None:
        interval = self.lease_ms / 3000
        while True:
            await asyncio.sleep(interval)
            try:
                if not await self.store.extend(skey, token, self.lease_ms):
                    log.warning("idempotency: lease of %r lost while the handler ran", skey)
                    return
            except StoreUnavailable as exc:
                log.warning("idempotency: could not renew the lease of %r: %s", skey, exc)

    @staticmethod
    async def _stop(task: asyncio.Task[None] | None) -> None:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _release(self, skey: str, token: str) -> None:
        try:
            await self.store.release(skey, token)
        except StoreUnavailable as exc:
            log.error("idempotency: could not release %r (it expires with its lease): %s", skey, exc)
