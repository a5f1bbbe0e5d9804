"""A Redis Streams consumer-group runner: at-least-once processing with retries,
dead-lettering, and take-over of messages left with a crashed consumer.

Each :meth:`StreamConsumer.run_once` handles one batch, in stream order:

1. first, once, the messages already delivered to *this* consumer name and never
   acknowledged (the process restarted under the same name), and again after a batch
   failed part-way (a Redis error on the ack, say): its entries are pending with this
   name, so they are retried at once rather than after ``claim_idle_s``;
2. messages pending with *another* consumer for longer than ``claim_idle_s`` (it crashed
   or hangs), taken over with ``XAUTOCLAIM``;
3. new messages (``XREADGROUP ... >``, blocking up to ``block_s``).

A message is acknowledged (``XACK``) only after its handler returned, so its effect is
committed before Redis forgets it; a crash before the ack means redelivery (to this
consumer on restart, or to another after ``claim_idle_s``). A failing handler is retried
in place with the :class:`RetryPolicy`'s backoff up to its ``max_attempts`` (later
messages of the batch wait: a stream is processed in order); then the message goes to
the dead-letter stream (``<stream>:dead``: the entry's fields plus ``error``,
``source-entry``, ``group``, ``deliveries``) and is acknowledged, in one ``MULTI``. A
message Redis has delivered more than ``max_deliveries`` times (it keeps crashing its
consumers) is dead-lettered without running it.

Effects are exactly-once only if the handler makes them so: wrap it in
:meth:`Inbox.handler <.inbox.Inbox.handler>`, which records the event id in the same
PostgreSQL transaction as the handler's writes.

Ordering: one consumer processes its stream in order (``concurrency=1``, the default)
or, with ``concurrency=n``, up to *n* keys of a batch at once, each key in order.
Several consumers of one group split a stream between them, so a key's messages may
then be processed concurrently: shard streams by key (see
:class:`~.publisher_redis.RedisStreamsPublisher`) to keep per-key order with several
consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from edge_kv.core.backoff import RETRY, FullJitter, RetryVerdict
from edge_kv.core.errors import EdgeKvError, InvalidInput, Unavailable
from edge_kv.origin import _redis
from edge_kv.origin.resilience.retry_policy import RetryPolicy

from .message import Message

__all__ = ["ConsumerMetrics", "Delivery", "Handler", "StreamConsumer"]

log = logging.getLogger(__name__)


class ConsumerUnavailable(Unavailable):
    """Redis did not answer a consumer call in time."""

    code = "consumer_unavailable"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of a message: ``deliveries`` is how many times Redis has delivered
    this stream entry (1 the first time)."""

    message: Message
    stream: str
    entry_id: str
    deliveries: int


Handler = Callable[[Delivery], Awaitable[None]]


@dataclass
class ConsumerMetrics:
    handled: int = 0
    retries: int = 0
    claimed: int = 0
    dead_lettered: int = 0
    malformed: int = 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _retry_anything(exc: BaseException, now: float) -> RetryVerdict:
    return RETRY


def default_consumer_retry() -> RetryPolicy:
    """5 attempts, full-jitter backoff from 0.1 s up to 5 s."""
    return RetryPolicy(max_attempts=5, max_total=None, backoff=FullJitter(base=0.1, cap=5.0))


class StreamConsumer:
    """Consumes ``stream`` as ``consumer`` of ``group`` and calls ``handler`` for each
    message. Call :meth:`ensure_group` once (or let :meth:`run` do it)."""

    def __init__(
        self,
        redis: Any,
        stream: str,
        group: str,
        consumer: str,
        handler: Handler,
        *,
        retry: RetryPolicy | None = None,
        max_deliveries: int = 10,
        claim_idle_s: float = 30.0,
        batch: int = 100,
        block_s: float = 1.0,
        concurrency: int = 1,
        dead_letter_stream: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        if batch < 1 or concurrency < 1 or max_deliveries < 1:
            raise InvalidInput("batch, concurrency and max_deliveries must be >= 1")
        if not claim_idle_s > 0 or not block_s >= 0 or not timeout > 0:
            raise InvalidInput("claim_idle_s and timeout must be > 0, block_s >= 0")
        self.redis = _redis.prepare(redis)
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.handler = handler
        base = retry or default_consumer_retry()
        self.retry = base.with_classifiers(classify=_retry_anything)
        self.max_deliveries = max_deliveries
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.batch = batch
        self.block_ms = int(block_s * 1000)
        self.concurrency = concurrency
        self.dead_letter_stream = dead_letter_stream or f"{stream}:dead"
        self.timeout = timeout
        self.metrics = ConsumerMetrics()
        self._own_pending_done = False
        self._claim_cursor = "0-0"

    async def _call(self, aw: Awaitable[Any], what: str, extra_s: float = 0.0) -> Any:
        return await _redis.bounded(aw, self.timeout + extra_s, what, ConsumerUnavailable)

    async def ensure_group(self, start_id: str = "0") -> None:
        """Create the group (and the stream) if missing, reading from ``start_id``
        (``"0"``: everything in the stream; ``"$"``: only what comes next)."""
        try:
            await self._call(
                self.redis.xgroup_create(self.stream, self.group, id=start_id, mkstream=True), "xgroup create"
            )
        except aioredis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- reading -----------------------------------------------------------------------
    async def _pending_counts(self, ids: Sequence[str]) -> dict[str, int]:
        if not ids:
            return {}
        rows = await self._call(
            self.redis.xpending_range(
                self.stream, self.group, min=ids[0], max=ids[-1], count=len(ids) * 2 + 10
            ),
            "xpending",
        )
        return {_text(r["message_id"]): int(r["times_delivered"]) for r in rows}

    async def _fetch(self) -> list[tuple[str, Any, int]]:
        """The next batch: (entry id, fields, deliveries)."""
        if not self._own_pending_done:
            reply = await self._call(
                self.redis.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=self.batch),
                "xreadgroup own pending",
            )
            entries = [(_text(i), f) for i, f in (reply[0][1] if reply else []) if f is not None]
            if entries:
                counts = await self._pending_counts([i for i, _ in entries])
                return [(i, f, counts.get(i, 1)) for i, f in entries]
            self._own_pending_done = True
        reply = await self._call(
            self.redis.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                self.claim_idle_ms,
                self._claim_cursor,
                count=self.batch,
            ),
            "xautoclaim",
        )
        cursor, claimed = _text(reply[0]), reply[1]
        self._claim_cursor = cursor
        deleted = [_text(i) for i in (reply[2] if len(reply) > 2 else [])]
        if deleted:  # trimmed away while pending: nothing left to process
            await self._call(self.redis.xack(self.stream, self.group, *deleted), "xack deleted")
        entries = [(_text(i), f) for i, f in claimed if f is not None]
        if entries:
            self.metrics.claimed += len(entries)
            counts = await self._pending_counts([i for i, _ in entries])
            return [(i, f, counts.get(i, 1)) for i, f in entries]
        reply = await self._call(
            self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=self.batch, block=self.block_ms or None
            ),
            "xreadgroup",
            extra_s=self.block_ms / 1000,
        )
        return [(_text(i), f, 1) for i, f in (reply[0][1] if reply else [])]

    # -- handling ----------------------------------------------------------------------
    async def run_once(self) -> int:
        """Fetch and handle one batch; returns how many messages it took off the group's
        pending list (handled or dead-lettered)."""
        entries = await self._fetch()
        if not entries:
            return 0
        try:
            return await self._handle_batch(entries)
        except BaseException:
            # The batch is pending with this consumer name; XAUTOCLAIM would only take it
            # back after claim_idle_s. Re-read it first on the next call instead (handled
            # entries run again: duplicates are normal, the inbox skips them).
            self._own_pending_done = False
            raise

    async def _handle_batch(self, entries: Sequence[tuple[str, Any, int]]) -> int:
        lanes: dict[str, list[tuple[str, Any, int]]] = {}
        acks: list[str] = []
        for entry in entries:
            lane = entry[0]  # malformed entries get a lane of their own
            with contextlib.suppress(InvalidInput):
                lane = Message.from_fields(entry[1]).key
            lanes.setdefault(lane, []).append(entry)
        if self.concurrency == 1:
            for entry in entries:
                acks.extend(await self._handle_lane([entry]))
        else:
            sem = asyncio.Semaphore(self.concurrency)

            async def lane_task(items: list[tuple[str, Any, int]]) -> list[str]:
                async with sem:
                    return await self._handle_lane(items)

            for done in await asyncio.gather(*(lane_task(v) for v in lanes.values())):
                acks.extend(done)
        if acks:
            await self._call(self.redis.xack(self.stream, self.group, *acks), "xack")
        return len(entries)

    async def _handle_lane(self, items: Sequence[tuple[str, Any, int]]) -> list[str]:
        acked: list[str] = []
        for entry_id, fields, deliveries in items:
            try:
                message = Message.from_fields(fields)
            except InvalidInput as exc:
                self.metrics.malformed += 1
                await self._dead_letter(entry_id, fields, deliveries, f"malformed entry: {exc}")
                continue  # acknowledged by the dead-letter MULTI
            if deliveries > self.max_deliveries:
                await self._dead_letter(
                    entry_id,
                    fields,
                    deliveries,
                    f"delivered {deliveries} times (max_deliveries {self.max_deliveries})",
                )
                continue
            delivery = Delivery(message=message, stream=self.stream, entry_id=entry_id, deliveries=deliveries)
            before = self.retry.metrics.retries
            try:
                await self.retry.call(self.handler, delivery)
            except Exception as exc:
                self.metrics.retries += self.retry.metrics.retries - before
                log.warning("message %s (entry %s) dead-lettered: %s", message.id, entry_id, exc)
                await self._dead_letter(entry_id, fields, deliveries, f"{type(exc).__name__}: {exc}")
                continue
            self.metrics.retries += self.retry.metrics.retries - before
            self.metrics.handled += 1
            acked.append(entry_id)
        return acked

    async def _dead_letter(self, entry_id: str, fields: Any, deliveries: int, error: str) -> None:
        record = {_text(k): _text(v) for k, v in dict(fields).items()}
        record.update(
            {
                "error": error[:2000],
                "source-entry": entry_id,
                "group": self.group,
                "deliveries": str(deliveries),
            }
        )
        pipe = self.redis.pipeline(transaction=True)
        pipe.xadd(self.dead_letter_stream, record)
        pipe.xack(self.stream, self.group, entry_id)
        await self._call(pipe.execute(), "dead-letter")
        self.metrics.dead_lettered += 1

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until ``stop`` is set (or the task is cancelled). Redis failures are
        logged and retried with backoff."""
        stop = stop or asyncio.Event()
        await self.ensure_group()
        failures = 0
        while not stop.is_set():
            try:
                await self.run_once()
                failures = 0
            except (EdgeKvError, aioredis.RedisError) as exc:
                failures += 1
                log.warning("stream consumer %s/%s: %s", self.stream, self.consumer, exc)
                await asyncio.sleep(self.retry.backoff.delay(min(failures, 10), 0.0, self.retry.rng))
