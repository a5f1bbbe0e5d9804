"""The relay: publishes committed outbox events to a broker, at least once, each key in
commit order, with several relays running at once.

One batch (:meth:`Relay.run_once`) is one PostgreSQL transaction:

1. **Claim keys.** Lock the oldest pending event (the *head*) of up to ``max_keys`` keys
   with ``FOR UPDATE SKIP LOCKED``: a key whose head another relay holds is skipped, and
   no relay can take a later event of that key, because a later event is not a head
   while the earlier one is pending. So each key is published by one relay at a time.
   A head waiting out its backoff (``next_attempt_at``) holds back its whole key.
2. **Read the batch:** the claimed heads and the events after them, in ``seq`` order
   (``seq`` is commit order within a key, see :mod:`.outbox`), up to ``batch_size``.
3. **Publish in rounds:** round *n* publishes the *n*-th event of every claimed key in
   one :meth:`~.publisher.Publisher.publish_many` call; a key whose event failed takes
   no further part in the batch. A key's events therefore reach the broker in order.
4. **Record** in the same transaction: published events get ``published_at``; a failed
   event gets ``attempts + 1``, its error and a backoff (the :class:`RetryPolicy`'s
   ``backoff``) before it is tried again; once ``attempts`` reaches the policy's
   ``max_attempts`` it moves to the dead-letter table with its last error, and the
   key's next event becomes its head. Then commit.

A relay that dies anywhere before the commit leaves its events pending: they are
published again (at-least-once; consumers de-duplicate on the event id). Wake-up:
``LISTEN`` on the outbox's channel, with ``poll_interval_s`` polling as the fallback (and
for retries whose backoff has passed). Published rows are deleted every
``cleanup_interval_s`` once older than ``retain_published_s``. :meth:`Outbox.stats
<.outbox.Outbox.stats>` reports backlog and lag; :attr:`Relay.metrics` counts this
relay's work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from edge_kv.core.backoff import FullJitter
from edge_kv.core.errors import InvalidInput
from edge_kv.origin._pg import connection_factory, table_identifier
from edge_kv.origin.resilience.retry_policy import RetryPolicy

from .errors import PublishFailed
from .message import Message
from .outbox import Outbox
from .publisher import Publisher

__all__ = ["Relay", "RelayMetrics"]

log = logging.getLogger(__name__)

_CLAIM = """
SELECT o.seq, o.key FROM {table} o
 WHERE o.seq IN (SELECT DISTINCT ON (key) seq FROM {table} WHERE published_at IS NULL ORDER BY key, seq)
   AND o.published_at IS NULL AND o.next_attempt_at <= now()
 ORDER BY o.seq
 LIMIT %s
 FOR UPDATE SKIP LOCKED
"""
_BATCH = """
SELECT seq, id, topic, key, payload, headers, created, attempts FROM (
  SELECT o.seq, o.id, o.topic, o.key, o.payload, o.headers, o.created, o.attempts,
         row_number() OVER (PARTITION BY o.key ORDER BY o.seq) AS rn
    FROM {table} o JOIN unnest(%s::text[], %s::bigint[]) AS h(key, head)
      ON o.key = h.key AND o.seq >= h.head
   WHERE o.published_at IS NULL
) x WHERE rn <= %s ORDER BY seq
"""
_MARK = "UPDATE {table} SET published_at = now() WHERE seq = ANY(%s)"
_FAIL = """
UPDATE {table} SET attempts = attempts + 1, last_error = %s,
       next_attempt_at = now() + %s * interval '1 millisecond'
 WHERE seq = %s
"""
_DEAD = """
WITH moved AS (DELETE FROM {table} WHERE seq = %s RETURNING *)
INSERT INTO {dead} (seq, id, topic, key, payload, headers, created, attempts, last_error)
SELECT seq, id, topic, key, payload, headers, created, attempts + 1, %s FROM moved
"""


@dataclass
class RelayMetrics:
    """What this relay did (counters only grow)."""

    batches: int = 0
    published: int = 0
    failed: int = 0
    dead_lettered: int = 0
    cleaned: int = 0
    errors: int = 0
    last_error: str | None = None
    wakeups: int = 0
    last_batch_s: float = 0.0


@dataclass
class _Claimed:
    seq: int
    attempts: int
    message: Message


@dataclass
class _Outcome:
    published: list[int] = field(default_factory=list)
    failed: list[tuple[_Claimed, BaseException]] = field(default_factory=list)


def default_relay_retry() -> RetryPolicy:
    """10 attempts, full-jitter backoff from 0.5 s doubling up to 60 s."""
    return RetryPolicy(max_attempts=10, max_total=None, backoff=FullJitter(base=0.5, cap=60.0))


def _error_text(exc: BaseException) -> str:
    text = str(exc)
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:2000]


class Relay:
    """Publishes ``outbox``'s events through ``publisher``; ``db`` is where the outbox
    lives (a pool, a connection factory or a connection; the relay holds one connection
    for ``LISTEN`` while :meth:`run` runs and borrows another for each batch).

    ``retry`` (a :class:`~edge_kv.origin.resilience.RetryPolicy`) supplies
    ``max_attempts`` (attempts before dead-lettering) and ``backoff`` (delay before the
    next attempt of a failed event); its ``rng`` draws the jitter.
    """

    def __init__(
        self,
        outbox: Outbox,
        db: object,
        publisher: Publisher,
        *,
        batch_size: int = 500,
        max_keys: int = 50,
        retry: RetryPolicy | None = None,
        publish_timeout_s: float = 10.0,
        poll_interval_s: float = 1.0,
        cleanup_interval_s: float = 60.0,
        retain_published_s: float = 3600.0,
    ) -> None:
        if batch_size < 1 or max_keys < 1:
            raise InvalidInput("batch_size and max_keys must be >= 1")
        if not poll_interval_s > 0 or not publish_timeout_s > 0:
            raise InvalidInput("poll_interval_s and publish_timeout_s must be > 0")
        self.outbox = outbox
        self.connect = connection_factory(db)
        self.publisher = publisher
        self.batch_size = batch_size
        self.max_keys = max_keys
        self.retry = retry or default_relay_retry()
        self.publish_timeout_s = publish_timeout_s
        self.poll_interval_s = poll_interval_s
        self.cleanup_interval_s = cleanup_interval_s
        self.retain_published_s = retain_published_s
        self.metrics = RelayMetrics()
        t = table_identifier(outbox.table)
        self._claim = sql.SQL(_CLAIM).format(table=t)
        self._batch = sql.SQL(_BATCH).format(table=t)
        self._mark = sql.SQL(_MARK).format(table=t)
        self._fail = sql.SQL(_FAIL).format(table=t)
        self._dead = sql.SQL(_DEAD).format(table=t, dead=table_identifier(outbox.dead_table))
        self._next_cleanup = time.monotonic() + cleanup_interval_s

    # -- one batch ---------------------------------------------------------------------
    async def run_once(self) -> int:
        """Claim, publish and record one batch; returns how many events it published.
        Database errors propagate (nothing was recorded: the batch is published again)."""
        return (await self._run_batch())[1]

    async def _run_batch(self) -> tuple[int, int]:
        """(events claimed, events published) of one batch."""
        started = time.monotonic()
        async with self.connect() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            cur = await conn.execute(self._claim, (self.max_keys,))
            heads = await cur.fetchall()
            if not heads:
                return 0, 0
            # A new statement, so a new snapshot taken after the claim: it sees every
            # event of the claimed keys committed so far, from the head on.
            per_key = max(1, self.batch_size // len(heads))
            cur = await conn.execute(self._batch, ([k for _, k in heads], [s for s, _ in heads], per_key))
            rows = await cur.fetchall()
            claimed = [
                _Claimed(
                    seq=r[0],
                    attempts=r[7],
                    message=Message(id=r[1], topic=r[2], key=r[3], payload=r[4], headers=r[5], created=r[6]),
                )
                for r in rows
            ]
            outcome = await self._publish(claimed)
            await self._record(conn, outcome)
        m = self.metrics
        m.batches += 1
        m.published += len(outcome.published)
        m.last_batch_s = time.monotonic() - started
        return len(claimed), len(outcome.published)

    async def _publish(self, claimed: Sequence[_Claimed]) -> _Outcome:
        queues: dict[str, list[_Claimed]] = {}
        for c in claimed:  # seq order, so each queue is in its key's commit order
            queues.setdefault(c.message.key, []).append(c)
        outcome = _Outcome()
        active = list(queues)
        position = 0
        while active:
            round_ = [queues[k][position] for k in active if position < len(queues[k])]
            if not round_:
                break
            try:
                async with asyncio.timeout(self.publish_timeout_s):
                    results = await self.publisher.publish_many([c.message for c in round_])
                if len(results) != len(round_):
                    raise PublishFailed(
                        f"publisher returned {len(results)} results for {len(round_)} messages"
                    )
            except Exception as exc:
                err: BaseException = (
                    exc
                    if not isinstance(exc, TimeoutError)
                    else PublishFailed(f"publish timed out after {self.publish_timeout_s}s")
                )
                results = [err] * len(round_)
            active = []
            for c, result in zip(round_, results, strict=True):
                if result is None:
                    outcome.published.append(c.seq)
                    active.append(c.message.key)
                else:
                    outcome.failed.append((c, result))
            position += 1
        return outcome

    async def _record(self, conn: psycopg.AsyncConnection[Any], outcome: _Outcome) -> None:
        if outcome.published:
            await conn.execute(self._mark, (outcome.published,))
        for c, exc in outcome.failed:
            attempts = c.attempts + 1
            error = _error_text(exc)
            self.metrics.failed += 1
            if attempts >= self.retry.max_attempts:
                await conn.execute(self._dead, (c.seq, error))
                self.metrics.dead_lettered += 1
                log.warning(
                    "outbox event %s dead-lettered after %d attempts: %s", c.message.id, attempts, error
                )
            else:
                delay = self.retry.backoff.delay(attempts, 0.0, self.retry.rng)
                await conn.execute(self._fail, (error, int(delay * 1000), c.seq))

    async def drain(self, *, max_batches: int | None = None) -> int:
        """Run batches until nothing is claimable (every key is done, held by another
        relay or waiting out a backoff) or ``max_batches``; returns how many events were
        published. For tests and scripts."""
        total, batches = 0, 0
        while max_batches is None or batches < max_batches:
            claimed, published = await self._run_batch()
            batches += 1
            total += published
            if claimed == 0:
                break
        return total

    # -- the loop ----------------------------------------------------------------------
    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Publish until ``stop`` is set (or the task is cancelled). Database and broker
        failures are logged and counted; the loop backs off and carries on."""
        stop = stop or asyncio.Event()
        failures = 0
        while not stop.is_set():
            try:
                async with self.connect() as listener:
                    await self._listen_loop(listener, stop)
                    failures = 0
            except (psycopg.Error, OSError) as exc:
                failures += 1
                self.metrics.errors += 1
                self.metrics.last_error = _error_text(exc)
                log.warning("outbox relay: %s", self.metrics.last_error)
                delay = self.retry.backoff.delay(min(failures, 10), 0.0, self.retry.rng)
                try:
                    async with asyncio.timeout(min(delay, self.poll_interval_s * 5)):
                        await stop.wait()
                except TimeoutError:
                    pass

    async def _listen_loop(self, listener: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> None:
        was_autocommit = listener.autocommit
        if not was_autocommit:
            await listener.rollback()
            await listener.set_autocommit(True)
        channel = sql.Identifier(self.outbox.channel)
        await listener.execute(sql.SQL("LISTEN {}").format(channel))
        try:
            while not stop.is_set():
                n = await self.run_once()
                if n >= self.batch_size // 2:
                    continue  # probably more waiting: no need to sleep
                if time.monotonic() >= self._next_cleanup:
                    self._next_cleanup = time.monotonic() + self.cleanup_interval_s
                    self.metrics.cleaned += await self.outbox.cleanup(
                        self.connect, retain_s=self.retain_published_s
                    )
                if n == 0:
                    await self._wait(listener, stop)
        finally:
            if not listener.closed and not listener.broken:
                await listener.execute(sql.SQL("UNLISTEN {}").format(channel))
                if not was_autocommit:
                    await listener.set_autocommit(False)

    async def _wait(self, listener: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> None:
        """Until a notification, ``poll_interval_s``, or ``stop`` (checked every 0.1 s)."""
        deadline = time.monotonic() + self.poll_interval_s
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            woken = False
            # Iterated to the end (stop_after=1 ends it): a generator left suspended would
            # keep holding the connection's lock.
            async for _ in listener.notifies(timeout=min(left, 0.1), stop_after=1):
                woken = True
            if woken:
                self.metrics.wakeups += 1
                return
