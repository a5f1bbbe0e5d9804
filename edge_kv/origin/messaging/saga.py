"""The saga orchestrator: a list of steps, each an action and its compensation, driven
to completion - or compensated - across crashes, with the state in PostgreSQL.

::

    reserve = SagaStep("reserve-stock", reserve_stock, release_stock, timeout_s=5)
    charge = SagaStep("charge-card", charge_card, refund_card, timeout_s=10)
    orchestrator = SagaOrchestrator(pool, [SagaDefinition("place-order", [reserve, charge])])
    await orchestrator.migrate()
    record = await orchestrator.start("place-order", {"order_id": "o-1"})
    # record.status: "completed", or "compensated" (a step failed, the completed ones
    # were undone in reverse order), or "stuck" (a compensation kept failing).
    await orchestrator.resume_all()          # at start-up: every unfinished saga

What is promised, and why:

* **Persisted after every transition.** The saga row (status, next step, action results,
  error) is updated in its own transaction after each action or compensation, fenced
  by the owner's lease and a version (:class:`~.errors.SagaLeaseLost` if another
  orchestrator took the saga over). With an :class:`~.outbox.Outbox`, each transition
  also writes an event (topic ``saga``, key the saga id) in that same transaction.
* **Resumable.** An orchestrator that crashes leaves the saga's lease to expire
  (``lease_s``, renewed while it works); :meth:`SagaOrchestrator.resume_all` (any
  instance) then re-runs the step that was in progress - the action, or the
  compensation - and goes on. A step may therefore run more than once: actions and
  compensations must be idempotent, and each call carries an idempotency key
  (``<saga id>:<step index>:<step name>:action`` or ``...:compensation``) that is the
  same on every call of that step, to pass to the service that applies the effect.
* **Compensation.** A failed action (it raised, or ran past ``timeout_s`` on its last
  attempt) makes the saga ``compensating``: the compensations of the steps that
  *completed* run in reverse order. The failed step's own compensation does not run,
  so an action must fail cleanly (no effect) - or, if it can fail half-way (a timeout),
  leave its partial effect to its own idempotency key and put the undo in a
  compensation of an extra step before it.
* **Stuck.** A compensation retried up to the compensation policy's ``max_attempts``
  and still failing parks the saga as ``stuck`` with its error; :meth:`stuck` lists
  them, :meth:`retry_stuck` resumes one after the cause is fixed.
* **Correlation.** Every step context and every transition event carries the saga's
  ``correlation_id`` and, as ``causation_id``, the id of the transition event that led
  to it; :meth:`StepContext.headers` gives both for the events a step writes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from edge_kv.core.backoff import FullJitter
from edge_kv.core.errors import InvalidInput
from edge_kv.origin._pg import connection_factory, table_identifier
from edge_kv.origin.resilience.retry_policy import RetryPolicy

from . import _schema
from .errors import SagaLeaseLost, UnknownSaga
from .message import check_text, event_headers, new_event_id
from .outbox import Outbox

__all__ = [
    "COMPENSATED",
    "COMPENSATING",
    "COMPLETED",
    "RUNNING",
    "STUCK",
    "SagaDefinition",
    "SagaOrchestrator",
    "SagaRecord",
    "SagaStep",
    "StepContext",
]

log = logging.getLogger(__name__)

RUNNING: Final = "running"
COMPENSATING: Final = "compensating"
COMPLETED: Final = "completed"
COMPENSATED: Final = "compensated"
STUCK: Final = "stuck"
UNFINISHED = (RUNNING, COMPENSATING)


@dataclass(frozen=True, slots=True)
class StepContext:
    """What an action or compensation is called with."""

    saga_id: str
    saga_type: str
    step: int
    step_name: str
    phase: str  # "action" or "compensation"
    data: Any
    results: Sequence[Any]
    correlation_id: str
    causation_id: str | None
    idempotency_key: str

    def headers(self) -> dict[str, str]:
        """``correlation-id`` / ``causation-id`` headers for an event this step writes."""
        return event_headers(self.correlation_id, self.causation_id)


Action = Callable[[StepContext], Awaitable[Any]]
Compensation = Callable[[StepContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SagaStep:
    """``action`` returns a JSON-serialisable result (kept in ``results``, visible to
    later steps); ``compensation`` (None: nothing to undo) undoes it. ``timeout_s``
    bounds each call of either."""

    name: str
    action: Action
    compensation: Compensation | None = None
    timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class SagaDefinition:
    name: str
    steps: Sequence[SagaStep]


@dataclass(frozen=True, slots=True)
class SagaRecord:
    """A saga's persisted state. ``step``: the next action (``running``) or the next
    compensation (``compensating``, -1 when none is left)."""

    saga_id: str
    saga_type: str
    status: str
    step: int
    data: Any
    results: list[Any]
    failed_step: int | None
    error: str | None
    correlation_id: str
    last_event_id: str | None
    version: int
    created_at: datetime
    updated_at: datetime
    owner: str | None = field(default=None, compare=False)

    @property
    def finished(self) -> bool:
        return self.status not in UNFINISHED


_COLUMNS = (
    "saga_id, saga_type, status, step, data, results, failed_step, error, correlation_id, "
    "last_event_id, version, created_at, updated_at, owner"
)
_INSERT = f"""
INSERT INTO {{table}} (saga_id, saga_type, status, step, data, correlation_id, last_event_id, owner, lease_until)
VALUES (%s, %s, 'running', 0, %s::jsonb, %s, %s, %s, now() + %s * interval '1 millisecond')
ON CONFLICT (saga_id) DO NOTHING
RETURNING {_COLUMNS}
"""
_TRANSITION = f"""
UPDATE {{table}} SET status = %s, step = %s, results = %s::jsonb, failed_step = %s, error = %s,
       last_event_id = %s, version = version + 1, updated_at = now(),
       owner = CASE WHEN %s THEN NULL ELSE owner END,
       lease_until = CASE WHEN %s THEN NULL ELSE now() + %s * interval '1 millisecond' END
 WHERE saga_id = %s AND owner = %s AND version = %s
RETURNING {_COLUMNS}
"""
_CLAIM_ONE = f"""
UPDATE {{table}} SET owner = %s, lease_until = now() + %s * interval '1 millisecond'
 WHERE saga_id = %s AND status IN ('running', 'compensating')
   AND (owner IS NULL OR owner = %s OR lease_until < now())
RETURNING {_COLUMNS}
"""
_CLAIM_MANY = f"""
UPDATE {{table}} SET owner = %s, lease_until = now() + %s * interval '1 millisecond'
 WHERE saga_id IN (
    SELECT saga_id FROM {{table}}
     WHERE status IN ('running', 'compensating') AND saga_type = ANY(%s)
       AND (owner IS NULL OR lease_until < now())
     ORDER BY updated_at LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING {_COLUMNS}
"""
_RENEW = """
UPDATE {table} SET lease_until = now() + %s * interval '1 millisecond'
 WHERE saga_id = %s AND owner = %s AND status IN ('running', 'compensating')
"""
_GET = f"SELECT {_COLUMNS} FROM {{table}} WHERE saga_id = %s"
_BY_STATUS = f"SELECT {_COLUMNS} FROM {{table}} WHERE status = ANY(%s) ORDER BY updated_at LIMIT %s"
_RETRY_STUCK = f"""
UPDATE {{table}} SET status = 'compensating', owner = NULL, lease_until = NULL, version = version + 1,
       updated_at = now()
 WHERE saga_id = %s AND status = 'stuck'
RETURNING {_COLUMNS}
"""


def default_action_retry() -> RetryPolicy:
    """3 attempts for transient errors only (timeouts, connection errors)."""
    return RetryPolicy(max_attempts=3, max_total=None, backoff=FullJitter(base=0.1, cap=2.0))


def default_compensation_retry() -> RetryPolicy:
    """5 attempts whatever the error, full-jitter backoff from 0.2 s up to 10 s."""
    return RetryPolicy(max_attempts=5, max_total=None, backoff=FullJitter(base=0.2, cap=10.0))


def _retry_anything(exc: BaseException, now: float) -> Any:
    from edge_kv.core.backoff import RETRY

    return RETRY


def _record(row: Mapping[str, Any]) -> SagaRecord:
    return SagaRecord(**row)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return "TimeoutError: step timed out"
    text = str(exc)
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:2000]


class SagaOrchestrator:
    """Runs the sagas of ``definitions`` (by :attr:`SagaDefinition.name`) with their
    state in ``table``; ``db`` as for :class:`~.outbox.Outbox`.

    ``owner`` names this instance (default: random); ``lease_s`` is how long a crashed
    instance keeps its sagas before another may resume them. ``action_retry`` retries an
    action in place (default: transient errors only, 3 attempts) before the saga fails;
    ``compensation_retry`` retries a compensation (default: any error, 5 attempts)
    before the saga is parked as ``stuck``. ``on_transition`` is called after each
    persisted transition (metrics, logging).
    """

    def __init__(
        self,
        db: object,
        definitions: Sequence[SagaDefinition],
        *,
        table: str = "edge_kv_sagas",
        outbox: Outbox | None = None,
        topic: str = "saga",
        owner: str | None = None,
        lease_s: float = 30.0,
        action_retry: RetryPolicy | None = None,
        compensation_retry: RetryPolicy | None = None,
        max_concurrent: int = 16,
        on_transition: Callable[[SagaRecord], None] | None = None,
    ) -> None:
        if not lease_s > 0:
            raise InvalidInput(f"lease_s must be > 0, got {lease_s!r}")
        self.connect = connection_factory(db)
        self.definitions = {d.name: d for d in definitions}
        for d in definitions:
            if not d.steps:
                raise InvalidInput(f"saga {d.name!r} has no steps")
        self.table = table
        self.outbox = outbox
        self.topic = topic
        self.owner = owner or f"orchestrator-{uuid.uuid4()}"
        self.lease_ms = int(lease_s * 1000)
        self.action_retry = action_retry or default_action_retry()
        self.compensation_retry = (compensation_retry or default_compensation_retry()).with_classifiers(
            classify=_retry_anything
        )
        self.max_concurrent = max_concurrent
        self.on_transition = on_transition
        t = table_identifier(table)
        self._insert = sql.SQL(_INSERT).format(table=t)
        self._transition_sql = sql.SQL(_TRANSITION).format(table=t)
        self._claim_one = sql.SQL(_CLAIM_ONE).format(table=t)
        self._claim_many = sql.SQL(_CLAIM_MANY).format(table=t)
        self._renew = sql.SQL(_RENEW).format(table=t)
        self._get = sql.SQL(_GET).format(table=t)
        self._by_status = sql.SQL(_BY_STATUS).format(table=t)
        self._retry_stuck = sql.SQL(_RETRY_STUCK).format(table=t)

    # -- schema and queries ------------------------------------------------------------
    def schema_statements(self) -> list[sql.Composed]:
        return _schema.statements(
            "sagas",
            table=self.table,
            unfinished_idx=_schema.index_name(self.table, "unfinished_idx"),
            stuck_idx=_schema.index_name(self.table, "stuck_idx"),
        )

    async def migrate(self) -> None:
        """Create the saga table (and the outbox's, if one was given) if missing."""
        if self.outbox is not None:
            await self.outbox.migrate(self.connect)
        async with self.connect() as conn:
            await _schema.run(conn, self.schema_statements())

    async def _fetch(self, query: sql.Composed, params: Sequence[Any]) -> list[SagaRecord]:
        async with self.connect() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            return [_record(r) for r in await cur.fetchall()]

    async def get(self, saga_id: str) -> SagaRecord:
        """The saga's current state; :class:`~.errors.UnknownSaga` if there is none."""
        rows = await self._fetch(self._get, (saga_id,))
        if not rows:
            raise UnknownSaga(f"no saga {saga_id!r}")
        return rows[0]

    async def stuck(self, *, limit: int = 100) -> list[SagaRecord]:
        """Sagas parked as ``stuck`` (a compensation kept failing; ``error`` says why)."""
        return await self._fetch(self._by_status, ([STUCK], limit))

    async def unfinished(self, *, limit: int = 100) -> list[SagaRecord]:
        """Sagas still ``running`` or ``compensating`` (driven now, or waiting for resume)."""
        return await self._fetch(self._by_status, (list(UNFINISHED), limit))

    async def retry_stuck(self, saga_id: str) -> SagaRecord:
        """Resume compensating a ``stuck`` saga (after fixing the cause); returns its end state."""
        rows = await self._fetch(self._retry_stuck, (saga_id,))
        if not rows:
            raise UnknownSaga(f"no stuck saga {saga_id!r}")
        return await self.run(saga_id)

    # -- starting and resuming ---------------------------------------------------------
    async def start(
        self,
        saga_type: str,
        data: Any,
        *,
        saga_id: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        run: bool = True,
    ) -> SagaRecord:
        """Persist a new saga and (``run=True``) drive it to an end state, which is
        returned. Idempotent on ``saga_id``: starting an existing saga drives it on if
        it is unfinished and free (its lease expired), else returns its state."""
        if saga_type not in self.definitions:
            raise UnknownSaga(f"no saga definition {saga_type!r}")
        sid = check_text("saga_id", saga_id) if saga_id is not None else str(uuid.uuid4())
        try:
            body = json.dumps(data)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"saga data is not JSON-serialisable: {exc}") from exc
        corr = correlation_id or sid
        async with self.connect() as conn, conn.transaction():
            event_id = None
            if self.outbox is not None:
                event_id = new_event_id()
            cur = await conn.cursor(row_factory=dict_row).execute(
                self._insert, (sid, saga_type, body, corr, event_id, self.owner, self.lease_ms)
            )
            row = await cur.fetchone()
            if row is not None and self.outbox is not None and event_id is not None:
                await self.outbox.add(
                    conn,
                    topic=self.topic,
                    key=sid,
                    event_id=event_id,
                    payload={"saga_id": sid, "saga_type": saga_type, "event": "started", "data": data},
                    headers=event_headers(corr, causation_id),
                )
        if row is None:
            return await self.run(sid) if run else await self.get(sid)
        record = _record(row)
        self._notify(record)
        return await self._drive(record) if run else record

    async def run(self, saga_id: str) -> SagaRecord:
        """Drive one saga if it is unfinished and owned by nobody live (or by this
        instance); returns its state afterwards."""
        rows = await self._fetch(self._claim_one, (self.owner, self.lease_ms, saga_id, self.owner))
        if not rows:
            return await self.get(saga_id)
        if rows[0].saga_type not in self.definitions:
            raise UnknownSaga(f"no saga definition {rows[0].saga_type!r} for saga {saga_id!r}")
        return await self._drive(rows[0])

    async def resume_all(self, *, limit: int = 1000) -> list[SagaRecord]:
        """Claim the unfinished sagas (of the types this instance knows) whose owner's
        lease has expired, and drive them, ``max_concurrent`` at a time; returns their
        end states (a saga taken over meanwhile by someone else is left out)."""
        claimed = await self._fetch(
            self._claim_many, (self.owner, self.lease_ms, list(self.definitions), limit)
        )
        sem = asyncio.Semaphore(self.max_concurrent)

        async def one(rec: SagaRecord) -> SagaRecord | None:
            async with sem:
                try:
                    return await self._drive(rec)
                except SagaLeaseLost:
                    return None

        done = await asyncio.gather(*(one(r) for r in claimed))
        return [r for r in done if r is not None]

    async def run_forever(self, stop: asyncio.Event | None = None, *, poll_s: float = 5.0) -> None:
        """Resume unfinished sagas every ``poll_s`` seconds until ``stop`` is set."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self.resume_all()
            except psycopg.Error as exc:
                log.warning("saga resume: %s", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll_s):
                    await stop.wait()

    # -- driving -----------------------------------------------------------------------
    def _notify(self, record: SagaRecord) -> None:
        if self.on_transition is not None:
            self.on_transition(record)

    async def _heartbeat(self, saga_id: str) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                async with self.connect() as conn, conn.transaction():
                    cur = await conn.execute(self._renew, (self.lease_ms, saga_id, self.owner))
                if cur.rowcount == 0:
                    return  # lost or finished: the next transition says which
            except psycopg.Error as exc:
                log.warning("saga %s: lease renewal failed: %s", saga_id, exc)

    async def _drive(self, record: SagaRecord) -> SagaRecord:
        definition = self.definitions[record.saga_type]
        beat = asyncio.create_task(self._heartbeat(record.saga_id))
        try:
            while not record.finished:
                record = await self._advance(definition, record)
            return record
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    def _context(self, record: SagaRecord, step: SagaStep, phase: str) -> StepContext:
        return StepContext(
            saga_id=record.saga_id,
            saga_type=record.saga_type,
            step=record.step,
            step_name=step.name,
            phase=phase,
            data=record.data,
            results=tuple(record.results),
            correlation_id=record.correlation_id,
            causation_id=record.last_event_id,
            idempotency_key=f"{record.saga_id}:{record.step}:{step.name}:{phase}",
        )

    async def _advance(self, definition: SagaDefinition, record: SagaRecord) -> SagaRecord:
        steps = definition.steps
        if record.status == RUNNING:
            if record.step >= len(steps):
                return await self._transition(record, "completed", status=COMPLETED)
            step = steps[record.step]
            try:
                result = await self.action_retry.call(
                    _timed, step.action, self._context(record, step, "action"), step.timeout_s
                )
                json.dumps(result)
            except Exception as exc:
                log.info("saga %s: step %s failed: %s", record.saga_id, step.name, exc)
                return await self._transition(
                    record,
                    "step_failed",
                    status=COMPENSATING,
                    step=record.step - 1,
                    failed_step=record.step,
                    error=_error_text(exc),
                )
            return await self._transition(
                record, "step_completed", step=record.step + 1, results=[*record.results, result]
            )
        # compensating
        if record.step < 0:
            return await self._transition(record, "compensated", status=COMPENSATED)
        step = steps[record.step]
        if step.compensation is not None:
            try:
                await self.compensation_retry.call(
                    _timed, step.compensation, self._context(record, step, "compensation"), step.timeout_s
                )
            except Exception as exc:
                log.warning("saga %s: compensation %s failed, saga stuck: %s", record.saga_id, step.name, exc)
                return await self._transition(record, "stuck", status=STUCK, error=_error_text(exc))
        return await self._transition(record, "step_compensated", step=record.step - 1)

    async def _transition(
        self,
        record: SagaRecord,
        event: str,
        *,
        status: str | None = None,
        step: int | None = None,
        results: list[Any] | None = None,
        failed_step: int | None = None,
        error: str | None = None,
    ) -> SagaRecord:
        new_status = status or record.status
        new_step = record.step if step is None else step
        new_results = record.results if results is None else results
        new_failed = record.failed_step if failed_step is None else failed_step
        new_error = record.error if error is None else error
        terminal = new_status not in UNFINISHED
        event_id = record.last_event_id
        async with self.connect() as conn, conn.transaction():
            if self.outbox is not None:
                event_id = await self.outbox.add(
                    conn,
                    topic=self.topic,
                    key=record.saga_id,
                    payload={
                        "saga_id": record.saga_id,
                        "saga_type": record.saga_type,
                        "event": event,
                        "status": new_status,
                        "step": record.step,
                        "error": error,
                    },
                    headers=event_headers(record.correlation_id, record.last_event_id),
                )
            cur = await conn.cursor(row_factory=dict_row).execute(
                self._transition_sql,
                (
                    new_status,
                    new_step,
                    json.dumps(new_results),
                    new_failed,
                    new_error,
                    event_id,
                    terminal,
                    terminal,
                    self.lease_ms,
                    record.saga_id,
                    self.owner,
                    record.version,
                ),
            )
            row = await cur.fetchone()
            if row is None:
                # Raising rolls the transaction (and the event) back.
                raise SagaLeaseLost(f"saga {record.saga_id!r}: lease lost to another orchestrator")
        new = _record(row)
        self._notify(new)
        return new


async def _timed(fn: Callable[[StepContext], Awaitable[Any]], ctx: StepContext, timeout_s: float) -> Any:
    async with asyncio.timeout(timeout_s):
        return await fn(ctx)
