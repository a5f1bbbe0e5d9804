"""Python API of the edge lock service, for code running in the Worker.

    lock = EdgeLock(env.LOCKS, "invoice:42", ttl_ms=10_000, wait_ms=2_000)
    async with lock as lease:          # raises LockBusy if not granted in time
        await write_somewhere(fencing_token=lease.token)

One Durable Object per resource (``idFromName("lock:" + resource)``). Waiting is
polling with a reserved place in the object's FIFO queue (see
:mod:`edge_kv.edge.locks.state`): every ``poll_ms`` the client asks again until granted
or ``wait_ms`` runs out, then it leaves the queue. The owner token is random (secrets,
i.e. the runtime's CSPRNG) unless given; whoever holds it can extend and release, so
keep it private. The fencing token (``lease.token``) is what guarded storage should
check (``edge_kv.origin.locks.fencing`` accepts it as a plain int).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from types import TracebackType
from typing import Any

from edge_kv.core.errors import InvalidInput, LockAcquireTimeout, LockError, LockNotOwned
from edge_kv.core.lease import Lease
from edge_kv.core.validate import check_key, check_positive_int
from edge_kv.edge.runtime import call_rpc

MAX_RESOURCE_BYTES = 256
DEFAULT_POLL_MS = 25


class LockBusy(LockAcquireTimeout):
    """The lock was not granted within the wait (``reason``: locked, queue full, ...).

    The edge's :class:`~edge_kv.core.errors.LockAcquireTimeout`, with what the object said.
    """

    def __init__(self, resource: str, reason: str, holder_expires_at_ms: int | None) -> None:
        super().__init__(f"lock {resource!r} not acquired: {reason}")
        self.resource = resource
        self.reason = reason
        self.holder_expires_at_ms = holder_expires_at_ms


def new_owner() -> str:
    """A fresh unguessable owner token (144 bits)."""
    return secrets.token_urlsafe(18)


def check_resource(resource: object) -> str:
    return check_key(resource, max_length=MAX_RESOURCE_BYTES)


def object_name(resource: str) -> str:
    return "lock:" + resource


class EdgeLock:
    """A lease on one resource held in the lock Durable Object bound as ``namespace``."""

    def __init__(
        self,
        namespace: Any,
        resource: str,
        *,
        ttl_ms: int = 30_000,
        wait_ms: int = 0,
        poll_ms: int = DEFAULT_POLL_MS,
        owner: str | None = None,
    ) -> None:
        self.namespace = namespace
        self.resource = check_resource(resource)
        self.ttl_ms = check_positive_int("ttl_ms", ttl_ms)
        if isinstance(wait_ms, bool) or not isinstance(wait_ms, int) or wait_ms < 0:
            raise InvalidInput(f"wait_ms must be an integer >= 0, got {wait_ms!r}")
        self.wait_ms = wait_ms
        self.poll_ms = check_positive_int("poll_ms", poll_ms)
        self.owner = owner or new_owner()
        self.lease: Lease | None = None

    def _stub(self) -> Any:
        return self.namespace.get(self.namespace.idFromName(object_name(self.resource)))

    async def acquire(self) -> Lease:
        """Acquire or raise :class:`LockBusy`; ``InvalidInput`` for arguments the object refuses."""
        stub = self._stub()
        deadline = time.monotonic() + self.wait_ms / 1000
        while True:
            remaining = max(0, round((deadline - time.monotonic()) * 1000))
            reply = await call_rpc(stub, "acquire", self.owner, self.ttl_ms, remaining)
            if reply["acquired"]:
                self.lease = Lease(reply["owner"], reply["token"], reply["expires_at_ms"])
                return self.lease
            if remaining <= 0 or reply["position"] is None:
                if reply["position"] is not None:
                    await call_rpc(stub, "leave", self.owner)
                raise LockBusy(self.resource, reply["reason"], reply["holder_expires_at_ms"])
            await asyncio.sleep(min(self.poll_ms, remaining) / 1000)

    async def extend(self, ttl_ms: int | None = None) -> Lease:
        """Push the expiry to now + ``ttl_ms``; :class:`LockNotOwned` if the lease was lost."""
        reply = await call_rpc(self._stub(), "extend", self.owner, ttl_ms or self.ttl_ms)
        if not reply["ok"]:
            self.lease = None
            raise LockNotOwned(reply["detail"])
        self.lease = Lease(reply["owner"], reply["token"], reply["expires_at_ms"])
        return self.lease

    async def release(self) -> None:
        """Release; :class:`LockNotOwned` if the lease already expired or was taken over."""
        reply = await call_rpc(self._stub(), "release", self.owner)
        self.lease = None
        if not reply["ok"]:
            raise LockNotOwned(reply["detail"])

    async def __aenter__(self) -> Lease:
        return await self.acquire()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.lease is None:
            return
        try:
            await self.release()
        except LockError:
            # Same rule as the origin locks: the body's own exception matters more;
            # otherwise a lease that ended under the critical section is news.
            if exc_type is None:
                raise
