"""Projections (the query side of CQRS): read models kept up to date from the event
store by a :class:`ProjectionRunner`.

What the runner promises, and why:

* **Every event applied exactly once, in position order.** Each batch is one transaction
  that locks the projection's checkpoint row (``SELECT .. FOR UPDATE``), reads the events
  after it, lets the projection update its read model *on the same connection*, and moves
  the checkpoint. A crash or a kill at any point rolls the whole batch back, checkpoint
  included, so nothing is applied twice and nothing is skipped; a second runner of the
  same projection waits on the row lock and then continues from the new checkpoint.
  Positions are gap-free and follow commit order (:mod:`.store`), so ``position >
  checkpoint`` never passes over an event committed late.
* **Catch up, then follow live.** The runner reads batches until none is left, then
  waits for the store's NOTIFY (one ``LISTEN`` connection held while running) or
  ``poll_interval`` seconds, whichever comes first; notifications are only wake-ups, the
  checkpoint is the truth, so a lost notification costs at most one poll interval, and
  without LISTEN (``listen=False`` or a failed listen connection) it polls.
* **Bounded and cancellable.** A batch holds at most ``batch_size`` events in memory;
  :meth:`ProjectionRunner.stop` (or leaving ``async with``) lets a batch in progress
  commit, interrupts the wait, and returns; a projection error stops the runner and is
  raised by ``stop``/``wait_for``. Connection errors are retried after ``retry_delay``.
* **Rebuild and swap.** :meth:`ProjectionRunner.rebuild` builds the read model from
  position 0 into a new table, then in one transaction (holding the live checkpoint so the
  live runner waits) applies the last events, drops the old table, renames the new one
  into its place and sets the checkpoint: readers see the old model or the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from edge_kv.origin._pg import table_identifier

from .errors import EventStoreUnavailable
from .events import RecordedEvent
from .store import COLUMNS, EventStore
from .upcasting import Upcasters

__all__ = ["Projection", "ProjectionRunner"]

log = logging.getLogger(__name__)

_LOCK = "SELECT position FROM {checkpoints} WHERE name = %s FOR UPDATE"
_ENSURE = "INSERT INTO {checkpoints} (name) VALUES (%s) ON CONFLICT (name) DO NOTHING"
_MOVE = "UPDATE {checkpoints} SET position = %s, updated_at = now() WHERE name = %s"
_SET = """
INSERT INTO {checkpoints} AS c (name, position) VALUES (%s, %s)
ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()
"""
_DROP_CP = "DELETE FROM {checkpoints} WHERE name = %s"
_READ = (
    "SELECT " + COLUMNS + " FROM {events} WHERE position > %s AND position <= %s ORDER BY position LIMIT %s"
)
_HEAD = "SELECT position FROM {positions}"
_ALL = 2**62


class Projection:
    """A read model. Subclass with a ``name`` (its checkpoint) and a ``table`` (the live
    read-model table, ``"table"`` or ``"schema.table"``), and implement :meth:`create` and
    :meth:`handle` (or :meth:`handle_batch`). Both get the table to use as an argument,
    since a rebuild writes to a new one: name everything after it (or let PostgreSQL
    name indexes and constraints) so a rebuild's table does not collide with the live one.
    The handlers run inside the runner's transaction and must use ``conn`` only."""

    name: str
    table: str
    upcasters: Upcasters | None = None
    """Applied to each event before the handlers see it."""

    async def create(self, conn: psycopg.AsyncConnection[Any], table: str) -> None:
        """Create the read-model table ``table`` if missing."""
        raise NotImplementedError

    async def handle(self, conn: psycopg.AsyncConnection[Any], event: RecordedEvent, table: str) -> None:
        """Apply one event to ``table``; ignore the types this model does not use."""
        raise NotImplementedError

    async def handle_batch(
        self, conn: psycopg.AsyncConnection[Any], events: Sequence[RecordedEvent], table: str
    ) -> None:
        """Apply a batch, in order (default: :meth:`handle` for each)."""
        for event in events:
            await self.handle(conn, event, table)


class ProjectionRunner:
    """Feeds ``store``'s events to ``projection``; see the module docstring.

    ::

        async with ProjectionRunner(store, BalanceProjection()) as runner:
            await runner.wait_for(last_position)
    """

    def __init__(
        self,
        store: EventStore,
        projection: Projection,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        listen: bool = True,
        retry_delay: float = 1.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval!r}")
        self.store = store
        self.projection = projection
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.listen = listen
        self.retry_delay = retry_delay
        self.position = 0
        """The checkpoint this runner last committed or read."""
        self.batches = 0
        self.events = 0
        n = store.names
        cp, ev, ps = (
            table_identifier(n.checkpoints),
            table_identifier(n.events),
            table_identifier(n.positions),
        )
        self._lock = sql.SQL(_LOCK).format(checkpoints=cp)
        self._ensure = sql.SQL(_ENSURE).format(checkpoints=cp)
        self._move = sql.SQL(_MOVE).format(checkpoints=cp)
        self._set = sql.SQL(_SET).format(checkpoints=cp)
        self._drop_cp = sql.SQL(_DROP_CP).format(checkpoints=cp)
        self._read = sql.SQL(_READ).format(events=ev)
        self._head = sql.SQL(_HEAD).format(positions=ps)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._in_batch = False
        self._progress = asyncio.Event()

    # -- one batch -------------------------------------------------------------------
    async def setup(self) -> None:
        """Create the read-model table and the checkpoint row if missing; read the checkpoint."""
        async with self.store.connect() as conn, conn.transaction():
            # The checkpoint row lock first: runners of one projection starting together
            # create the table one after the other (concurrent CREATE .. IF NOT EXISTS
            # of one table can fail).
            await conn.execute(self._ensure, (self.projection.name,))
            row = await (await conn.execute(self._lock, (self.projection.name,))).fetchone()
            await self.projection.create(conn, self.projection.table)
        self.position = int(row[0]) if row is not None else 0

    async def _batch(
        self, conn: psycopg.AsyncConnection[Any], name: str, table: str, upto: int = _ALL
    ) -> tuple[int, int]:
        """Inside the caller's transaction: apply the next batch of events after ``name``'s
        checkpoint (up to position ``upto``) to ``table`` and move the checkpoint.
        Returns (events applied, checkpoint now)."""
        row = await (await conn.execute(self._lock, (name,))).fetchone()
        if row is None:
            await conn.execute(self._ensure, (name,))
            row = await (await conn.execute(self._lock, (name,))).fetchone()
            assert row is not None
        after = int(row[0])
        cur = await conn.execute(self._read, (after, upto, self.batch_size))
        events = [RecordedEvent(*r) for r in await cur.fetchall()]
        if not events:
            return 0, after
        upcasters = self.projection.upcasters
        if upcasters:
            events = [upcasters.upcast(e) for e in events]
        await self.projection.handle_batch(conn, events, table)
        last = events[-1].position
        await conn.execute(self._move, (last, name))
        return len(events), last

    async def step(self) -> int:
        """Apply one batch in one transaction; the number of events applied (0: caught up)."""
        self._in_batch = True
        try:
            try:
                async with self.store.connect() as conn, conn.transaction():
                    count, position = await self._batch(conn, self.projection.name, self.projection.table)
            except psycopg.OperationalError as exc:
                raise EventStoreUnavailable(f"postgres: {exc}") from exc
        finally:
            self._in_batch = False
        if count:
            self.batches += 1
            self.events += count
        if position != self.position:  # another runner of the projection may have moved it
            self.position = position
            self._progress.set()
        return count

    async def catch_up(self) -> int:
        """Apply batches until none is left (or :meth:`stop` was called); the number of
        events applied."""
        total = 0
        while not self._stopping:
            n = await self.step()
            if n == 0:
                break
            total += n
        return total

    # -- running ---------------------------------------------------------------------
    async def run(self) -> None:
        """Set up, catch up, then follow live until :meth:`stop` (or cancellation)."""
        await self.setup()
        while not self._stopping:
            try:
                if self.listen:
                    await self._follow_listening()
                else:
                    await self._follow_polling()
            except (psycopg.OperationalError, EventStoreUnavailable) as exc:
                log.warning(
                    "projection %s: %s; retrying in %.1fs", self.projection.name, exc, self.retry_delay
                )
                await asyncio.sleep(self.retry_delay)

    async def _follow_polling(self) -> None:
        while not self._stopping:
            await self.catch_up()
            if self._stopping:
                return
            await asyncio.sleep(self.poll_interval)

    async def _follow_listening(self) -> None:
        async with self.store.connect() as conn:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.store.channel)))
            if not conn.autocommit:
                await conn.commit()
            try:
                while not self._stopping:
                    # Listening before each catch-up: an append committed during it is
                    # either read by it or wakes the wait below.
                    await self.catch_up()
                    if self._stopping:
                        return
                    async for _ in conn.notifies(timeout=self.poll_interval, stop_after=1):
                        pass
            finally:
                with contextlib.suppress(Exception):  # a pooled connection must stop listening
                    await asyncio.shield(conn.execute("UNLISTEN *"))

    async def start(self) -> None:
        """Run in a background task (see :meth:`run`)."""
        if self._task is not None:
            raise RuntimeError("runner already started")
        self._stopping = False
        self._task = asyncio.create_task(self.run(), name=f"projection:{self.projection.name}")
        self._task.add_done_callback(lambda _: self._progress.set())

    async def stop(self) -> None:
        """Stop after the batch in progress (if any) commits; re-raise a projection error
        that stopped the runner."""
        task, self._task = self._task, None
        self._stopping = True
        if task is None:
            return
        if not self._in_batch:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def __aenter__(self) -> ProjectionRunner:
        await self.start()
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            await self.stop()
        except Exception:
            if exc is None:
                raise
            log.exception("projection %s failed", self.projection.name)

    async def wait_for(self, position: int, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Return once the checkpoint is at ``position`` or beyond; ``TimeoutError``
        after ``timeout`` s, or the error that stopped the runner."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.position < position:
            task = self._task
            if task is None or task.done():
                err = None if task is None or task.cancelled() else task.exception()
                if err is not None:
                    raise err
                raise RuntimeError("the runner is not running")
            self._progress.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"projection {self.projection.name} at {self.position}, waiting for {position}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)

    # -- rebuild ---------------------------------------------------------------------
    async def rebuild(self) -> int:
        """Rebuild the read model from position 0 into a new table and swap it in (see the
        module docstring); the live runner may keep running meanwhile. Returns the
        checkpoint the new model starts at."""
        live = self.projection.table
        schema, _, base = live.rpartition(".")
        suffix = uuid.uuid4().hex[:8]
        new = f"{schema}.{base}_rb_{suffix}" if schema else f"{base}_rb_{suffix}"
        tmp = f"{self.projection.name}#rebuild-{suffix}"
        async with self.store.connect() as conn, conn.transaction():
            await self.projection.create(conn, new)
            await conn.execute(self._set, (tmp, 0))
        try:
            while True:
                async with self.store.connect() as conn, conn.transaction():
                    count, _ = await self._batch(conn, tmp, new)
                if count == 0:
                    break
            async with self.store.connect() as conn, conn.transaction():
                await conn.execute(self._ensure, (self.projection.name,))
                await conn.execute(self._lock, (self.projection.name,))  # the live runner waits
                row = await (await conn.execute(self._head)).fetchone()
                head = int(row[0]) if row is not None else 0
                position = 0
                while True:
                    count, position = await self._batch(conn, tmp, new, upto=head)
                    if count == 0:
                        break
                await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table_identifier(live)))
                await conn.execute(
                    sql.SQL("ALTER TABLE {} RENAME TO {}").format(table_identifier(new), sql.Identifier(base))
                )
                await conn.execute(self._move, (position, self.projection.name))
                await conn.execute(self._drop_cp, (tmp,))
        except BaseException:
            with contextlib.suppress(Exception):
                async with self.store.connect() as conn, conn.transaction():
                    await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table_identifier(new)))
                    await conn.execute(self._drop_cp, (tmp,))
            raise
        return position
