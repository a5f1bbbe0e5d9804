"""Loading and saving aggregates through an :class:`~.store.EventStore`.

* :meth:`Repository.load` restores the latest snapshot (if its ``snapshot_version``
  matches the class) and replays the events after it, or replays the whole stream: both
  give the same aggregate, since a snapshot is the state the same events folded into.
* :meth:`Repository.save` appends the pending events with the aggregate's loaded version
  as the expected version (so a concurrent writer makes it raise
  :class:`~.errors.ConcurrencyError`), then takes a snapshot each time the version crosses
  a multiple of ``snapshot_every``. The snapshot is written after the append commits and
  is only a cache: if writing it fails the save still succeeded (the failure is logged),
  and loading falls back to an older snapshot or a full replay.
* :meth:`Repository.execute` is load, run the command, save, with
  :func:`~.retry.retry_on_conflict` around it.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import psycopg

from edge_kv.origin.resilience.retry_policy import RetryPolicy

from .aggregate import Aggregate
from .events import RecordedEvent
from .retry import retry_on_conflict
from .store import EventStore, InTransaction

__all__ = ["Repository"]

A = TypeVar("A", bound=Aggregate)
log = logging.getLogger(__name__)


class Repository(Generic[A]):
    """Aggregates of class ``aggregate`` in ``store``; ``snapshot_every=None`` disables
    snapshots (loads always replay)."""

    def __init__(self, store: EventStore, aggregate: type[A], *, snapshot_every: int | None = 100) -> None:
        if snapshot_every is not None and snapshot_every < 1:
            raise ValueError(f"snapshot_every must be >= 1 or None, got {snapshot_every!r}")
        self.store = store
        self.aggregate = aggregate
        self.snapshot_every = snapshot_every

    async def load(self, id: str, *, use_snapshot: bool = True) -> A:
        """The aggregate at its stream's current version (version 0, the constructor's
        state, if the stream has no events)."""
        stream = self.aggregate.stream_name(id)
        agg: A | None = None
        if use_snapshot and self.snapshot_every is not None:
            snap = await self.store.load_snapshot(stream)
            if snap is not None and snap.schema_version == self.aggregate.snapshot_version:
                agg = self.aggregate.from_snapshot(snap, id)
        if agg is None:
            agg = self.aggregate(id)
        for event in await self.store.read_stream(stream, from_version=agg.version + 1):
            agg.apply_event(event)
        return agg

    async def save(
        self,
        agg: A,
        *,
        in_transaction: InTransaction | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[RecordedEvent]:
        """Append ``agg``'s pending events (expected version: the one it was loaded at)
        and return them recorded; see :meth:`EventStore.append` for ``in_transaction``
        and ``conn``."""
        pending = list(agg.pending)
        if not pending:
            return []
        if correlation_id is not None or causation_id is not None:
            pending = [
                dataclasses.replace(
                    e,
                    correlation_id=correlation_id or e.correlation_id,
                    causation_id=causation_id or e.causation_id,
                )
                for e in pending
            ]
        before = agg.version
        recorded = await self.store.append(
            agg.stream_name(agg.id),
            pending,
            expected_version=before,
            in_transaction=in_transaction,
            conn=conn,
        )
        agg.mark_saved(len(pending))
        every = self.snapshot_every
        if every is not None and conn is None and before // every != agg.version // every:
            try:
                await self.store.save_snapshot(agg.take_snapshot())
            except Exception:  # a cache: the events are committed, so the save succeeded
                log.warning(
                    "snapshot of %s at %d not saved", agg.stream_name(agg.id), agg.version, exc_info=True
                )
        return recorded

    async def execute(
        self,
        id: str,
        command: Callable[[A], object],
        *,
        policy: RetryPolicy | None = None,
        in_transaction: InTransaction | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> A:
        """Load ``id``, run ``command(aggregate)`` (sync or async; a domain error
        propagates), save; on :class:`~.errors.ConcurrencyError` start over from a fresh
        load, within ``policy`` (default :func:`~.retry.conflict_policy`). Returns the
        saved aggregate."""

        async def attempt() -> A:
            agg = await self.load(id)
            out = command(agg)
            if inspect.isawaitable(out):
                await out
            await self.save(
                agg, in_transaction=in_transaction, correlation_id=correlation_id, causation_id=causation_id
            )
            return agg

        return await retry_on_conflict(attempt, policy=policy)
