"""``EdgeOutbox``: a transactional outbox a Durable Object composes.

The object writes its own state change and an outbox entry in **one storage
transaction**; its ``alarm()`` calls :meth:`EdgeOutbox.deliver`, which POSTs the entries
to one origin endpoint, signed (RFC 9421, the gateway's keys), **in order**: entry *n+1*
is never sent before entry *n* was acknowledged (2xx) or dead-lettered. A failed attempt
is retried from the alarm with backoff (:class:`~edge_kv.core.outbox.DeliveryPolicy`); a
rejection (400, 422, ...) or the last allowed attempt moves the entry to the dead-letter
table with its last error, and delivery continues with the next entry.

::

    class Orders(DurableObject):
        def __init__(self, ctx, env):
            super().__init__(ctx, env)
            self.outbox = EdgeOutbox(ctx, env, endpoint="https://api.example/edge-events",
                                     signer=lambda: signer_from_env(env))

        async def place(self, order):
            sql = self.ctx.storage.sql
            def write():
                sql.exec("INSERT INTO orders (id, total) VALUES (?, ?)", order["id"], order["total"])
                self.outbox.add_sync("order.placed", order["id"], order)
            self.ctx.storage.transactionSync(write)  # state + entry: one transaction
            await self.outbox.arm()                  # deliver soon

        async def alarm(self, info=None):
            await self.outbox.deliver()

Every delivery is a ``POST`` of one JSON envelope
``{"id", "source", "seq", "topic", "key", "created_ms", "payload"}``; the origin
de-duplicates by ``id`` (``edge_kv.origin.edge_outbox``), so redelivery after a lost
answer or a restart has its effect once.
"""

from __future__ import annotations

import functools
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from edge_kv.core.backoff import parse_retry_after
from edge_kv.core.errors import InvalidInput
from edge_kv.core.outbox import DEAD_LETTER, DELIVERED, RETRY, DeliveryPolicy, classify_delivery
from edge_kv.edge.outbox.signing import OutboxSigner, SigningUnavailable
from edge_kv.edge.outbox.store import DeadLetter, OutboxEntry, OutboxTables
from edge_kv.edge.runtime import OriginResponse, fetch_origin, read_body, resolve

__all__ = ["DeliveryReport", "EdgeOutbox", "Fetch"]

Fetch = Callable[..., Awaitable[OriginResponse]]
MAX_TEXT = 256
MAX_PAYLOAD_BYTES = 128 * 1024
MAX_ERROR_CHARS = 300


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class DeliveryReport:
    """What one :meth:`EdgeOutbox.deliver` did: entries acknowledged and dead-lettered,
    entries still pending, the time of the next attempt (the alarm), the last error."""

    delivered: int = 0
    dead_lettered: int = 0
    pending: int = 0
    next_attempt_ms: int | None = None
    last_error: str | None = None
    busy: bool = False


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise InvalidInput(f"{name} must be a non-empty string of at most {MAX_TEXT} characters")
    return value


def _one_line(text: str) -> str:
    return " ".join(text.split())[:MAX_ERROR_CHARS]


class EdgeOutbox:
    """The outbox of one Durable Object (``ctx``), delivering to ``endpoint``.

    ``signer`` is an :class:`OutboxSigner` or a zero-argument factory of one (called at
    delivery, so entries can be written while the key is missing: they wait, they are not
    dead-lettered). ``source`` names the object in the envelope (default ``str(ctx.id)``).
    ``fetch`` is :func:`edge_kv.edge.runtime.fetch_origin` unless a test injects another.
    """

    def __init__(
        self,
        ctx: Any,
        env: Any = None,
        *,
        endpoint: str,
        signer: OutboxSigner | Callable[[], OutboxSigner],
        policy: DeliveryPolicy | None = None,
        source: str | None = None,
        timeout_ms: int = 10_000,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        fetch: Fetch | None = None,
        rng: random.Random | None = None,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise InvalidInput(f"endpoint must be an http(s) URL, got {endpoint!r}")
        self.ctx = ctx
        self.env = env
        self.storage = ctx.storage
        self.endpoint = endpoint
        self._signer = signer
        self.policy = policy or DeliveryPolicy()
        self.source = source if source is not None else str(ctx.id)
        self.timeout_ms = timeout_ms
        self.max_payload_bytes = max_payload_bytes
        self.fetch: Fetch = fetch or fetch_origin
        self.rng = rng or random.Random()
        self.clock_ms = clock_ms
        self.tables = OutboxTables(self.storage)
        self._delivering = False

    # -- writing -------------------------------------------------------------------
    def add_sync(self, topic: str, key: str, payload: Any, *, event_id: str | None = None) -> str:
        """Append an entry (synchronous SQL: call it inside ``ctx.storage.transactionSync``
        or ``ctx.storage.transaction`` next to the object's own writes). Returns the event id
        (a fresh UUID unless given). Raises :class:`InvalidInput` before writing anything."""
        _text("topic", topic)
        _text("key", key)
        eid = _text("event_id", event_id) if event_id is not None else str(uuid.uuid4())
        try:
            text = json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"payload must be JSON-serialisable: {exc}") from None
        if len(text.encode("utf-8")) > self.max_payload_bytes:
            raise InvalidInput(f"payload exceeds {self.max_payload_bytes} bytes of JSON")
        self.tables.insert(eid, topic, key, text, self.clock_ms())
        return eid

    async def add(self, topic: str, key: str, payload: Any, *, event_id: str | None = None) -> str:
        """:meth:`add_sync`, then :meth:`arm` (for use inside ``ctx.storage.transaction``:
        the entry commits or rolls back with the closure)."""
        eid = self.add_sync(topic, key, payload, event_id=event_id)
        await self.arm()
        return eid

    async def arm(self, at_ms: int | None = None) -> None:
        """Make sure the alarm fires no later than ``at_ms`` (default: now). Never moves an
        earlier alarm later, so it composes with an object's own use of its alarm."""
        when = self.clock_ms() if at_ms is None else at_ms
        current = await resolve(self.storage.getAlarm())
        if current is None or float(current) > when:
            await resolve(self.storage.setAlarm(when))

    # -- reading -------------------------------------------------------------------
    def pending(self, limit: int = 1000) -> list[OutboxEntry]:
        return self.tables.pending(limit)

    def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        return self.tables.dead_letters(limit)

    # -- delivering ----------------------------------------------------------------
    def _atomically(self, fn: Callable[[], None]) -> None:
        sync = getattr(self.storage, "transactionSync", None)
        if sync is None:
            fn()
        else:
            sync(fn)

    def envelope(self, entry: OutboxEntry) -> bytes:
        head = json.dumps(
            {
                "id": entry.event_id,
                "source": self.source,
                "seq": entry.seq,
                "topic": entry.topic,
                "key": entry.key,
                "created_ms": entry.created_ms,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return (head[:-1] + ',"payload":' + entry.payload + "}").encode("utf-8")

    def signer(self) -> OutboxSigner:
        return self._signer if isinstance(self._signer, OutboxSigner) else self._signer()

    async def _attempt(self, entry: OutboxEntry) -> tuple[int | None, str, float | None]:
        """One POST: (status or None, error text, Retry-After seconds)."""
        body = self.envelope(entry)
        headers = self.signer().headers(
            self.endpoint, body, event_id=entry.event_id, seq=entry.seq, source=self.source
        )
        try:
            response = await self.fetch(self.endpoint, "POST", headers, body, timeout_ms=self.timeout_ms)
        except Exception as exc:
            return None, _one_line(f"{type(exc).__name__}: {exc}"), None
        try:
            text = (await read_body(response))[:MAX_ERROR_CHARS].decode("utf-8", "replace")
        except Exception as exc:
            text = f"(body unreadable: {type(exc).__name__})"
        retry_after = next((v for k, v in response.headers if k.lower() == "retry-after"), None)
        return (
            response.status,
            _one_line(f"HTTP {response.status}: {text}"),
            parse_retry_after(retry_after, time.time()),
        )

    async def deliver(self, *, max_entries: int = 100) -> DeliveryReport:
        """Deliver pending entries in order until one must wait (then the alarm is set for
        its retry) or ``max_entries`` were handled (then the alarm is set for now). Never
        raises for a delivery failure; call it from the object's ``alarm()``."""
        if self._delivering:
            return DeliveryReport(busy=True)
        self._delivering = True
        try:
            return await self._deliver(max_entries)
        finally:
            self._delivering = False

    async def _deliver(self, max_entries: int) -> DeliveryReport:
        delivered = dead = 0
        wake: int | None = None
        last_error: str | None = None
        for _ in range(max_entries):
            entry = self.tables.head()
            if entry is None:
                break
            if entry.next_attempt_ms > self.clock_ms():
                wake = entry.next_attempt_ms
                break
            try:
                status, error, retry_after = await self._attempt(entry)
            except SigningUnavailable as exc:
                # Not the event's fault: wait without spending an attempt.
                last_error = _one_line(f"not sent: {exc.detail}")
                wake = self.clock_ms() + self.policy.delay_ms(max(1, entry.attempts), self.rng)
                self.tables.failed(entry.seq, entry.attempts, wake, last_error)
                break
            outcome = classify_delivery(status)
            if outcome == DELIVERED:
                self.tables.delivered(entry.seq)
                delivered += 1
                continue
            last_error = error
            now = self.clock_ms()
            step = self.policy.after_failure(entry.attempts, outcome, now, self.rng, retry_after)
            if step.action == DEAD_LETTER:
                self._atomically(functools.partial(self.tables.dead_letter, entry, step.attempts, error, now))
                print(
                    f"edge_kv outbox: dead-lettered event {entry.event_id} (seq {entry.seq},"
                    f" {step.attempts} attempt(s)): {error}"
                )
                dead += 1
                continue
            assert step.action == RETRY
            self.tables.failed(entry.seq, step.attempts, step.at_ms, error)
            wake = step.at_ms
            break
        else:
            if self.tables.head() is not None:
                wake = self.clock_ms()  # more than one batch: come back at once
        if wake is not None:
            await resolve(self.storage.setAlarm(wake))
        return DeliveryReport(delivered, dead, self.tables.pending_count(), wake, last_error)
