"""The Redis Streams consumer: retries with backoff, dead-letters after N attempts or
N deliveries, acknowledges only after the handler returned, per-key lanes."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
import redis.asyncio as aioredis

from edge_kv.core.backoff import Exponential
from edge_kv.origin.messaging import Delivery, Message, RedisStreamsPublisher, StreamConsumer
from edge_kv.origin.messaging.consumer import ConsumerUnavailable
from edge_kv.origin.resilience import RetryPolicy


async def _publish(redis: aioredis.Redis, stream: str, n: int, keys: int = 2) -> None:
    msgs = [Message(id=f"e{i}", topic=stream, key=f"k{i % keys}", payload={"i": i}) for i in range(n)]
    assert await RedisStreamsPublisher(redis).publish_many(msgs) == [None] * n


async def test_retries_then_dead_letters_and_acks(redis: aioredis.Redis, stream: str) -> None:
    await _publish(redis, stream, 4)
    calls: dict[str, int] = defaultdict(int)

    async def handler(d: Delivery) -> None:
        calls[d.message.id] += 1
        if d.message.id == "e1" or (d.message.id == "e2" and calls["e2"] < 3):
            raise RuntimeError(f"cannot handle {d.message.id}")

    policy = RetryPolicy(max_attempts=3, backoff=Exponential(base=0.01, cap=0.01))
    c = StreamConsumer(redis, stream, "g", "c1", handler, retry=policy, block_s=0)
    await c.ensure_group()
    await c.ensure_group()  # idempotent
    assert await c.run_once() == 4
    assert dict(calls) == {"e0": 1, "e1": 3, "e2": 3, "e3": 1}
    assert (c.metrics.handled, c.metrics.dead_lettered, c.metrics.retries) == (3, 1, 4)
    [(_, dead)] = await redis.xrange(f"{stream}:dead")
    assert (
        dead[b"id"] == b"e1"
        and dead[b"error"] == b"RuntimeError: cannot handle e1"
        and dead[b"group"] == b"g"
    )
    assert (await redis.xpending(stream, "g"))["pending"] == 0
    assert await c.run_once() == 0


async def test_a_message_redelivered_too_often_is_dead_lettered_unrun(
    redis: aioredis.Redis, stream: str
) -> None:
    await _publish(redis, stream, 1)
    await redis.xgroup_create(stream, "g", id="0")
    for name in ("a", "b"):  # delivered twice, never acknowledged (two crashed consumers)
        await redis.xreadgroup("g", name, {stream: ">" if name == "a" else "0"}, count=10)
    await redis.xclaim(stream, "g", "b", 0, ["0-0"])  # no-op, keeps the counts as they are
    ran: list[str] = []

    async def handler(d: Delivery) -> None:
        ran.append(d.message.id)

    c = StreamConsumer(redis, stream, "g", "c", handler, max_deliveries=1, claim_idle_s=0.001, block_s=0)
    await asyncio.sleep(0.01)
    assert await c.run_once() == 1
    assert ran == [] and c.metrics.dead_lettered == 1
    [(_, dead)] = await redis.xrange(f"{stream}:dead")
    assert b"max_deliveries 1" in dead[b"error"]


async def test_malformed_entries_go_to_the_dead_letter_stream(redis: aioredis.Redis, stream: str) -> None:
    await redis.xadd(stream, {"something": "else"})
    await _publish(redis, stream, 1)

    async def handler(d: Delivery) -> None:
        pass

    c = StreamConsumer(redis, stream, "g", "c", handler, block_s=0)
    await c.ensure_group()
    assert await c.run_once() == 2
    assert (c.metrics.malformed, c.metrics.handled) == (1, 1)


async def test_restarted_consumer_takes_its_own_pending_first(redis: aioredis.Redis, stream: str) -> None:
    await _publish(redis, stream, 3)
    await redis.xgroup_create(stream, "g", id="0")
    await redis.xreadgroup("g", "same-name", {stream: ">"}, count=2)  # then the process died
    seen: list[tuple[str, int]] = []

    async def handler(d: Delivery) -> None:
        seen.append((d.message.id, d.deliveries))

    c = StreamConsumer(redis, stream, "g", "same-name", handler, block_s=0)
    while await c.run_once():
        pass
    assert [s[0] for s in seen] == ["e0", "e1", "e2"] and seen[2][1] == 1


async def test_concurrent_lanes_keep_each_key_in_order(redis: aioredis.Redis, stream: str) -> None:
    await _publish(redis, stream, 40, keys=4)
    order: dict[str, list[int]] = defaultdict(list)
    active = 0
    peak = 0

    async def handler(d: Delivery) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.002)
        order[d.message.key].append(d.message.payload["i"])
        active -= 1

    c = StreamConsumer(redis, stream, "g", "c", handler, concurrency=4, block_s=0)
    await c.ensure_group()
    while await c.run_once():
        pass
    assert peak > 1
    for key, seq in order.items():
        assert seq == sorted(seq) and len(seq) == 10, key


async def test_run_stops_on_request(redis: aioredis.Redis, stream: str) -> None:
    got = asyncio.Event()

    async def handler(d: Delivery) -> None:
        got.set()

    c = StreamConsumer(redis, stream, "g", "c", handler, block_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(c.run(stop))
    await asyncio.sleep(0.05)
    await _publish(redis, stream, 1)
    await asyncio.wait_for(got.wait(), 2)
    stop.set()
    await asyncio.wait_for(task, 2)


async def test_a_batch_that_failed_part_way_is_retried_at_once_not_after_claim_idle(
    redis: aioredis.Redis, stream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the entries of a batch whose ``XACK`` failed stayed pending with this
    consumer and came back only through ``XAUTOCLAIM`` after ``claim_idle_s`` (30 s by
    default, exactly the stall of the benchmark's wait)."""
    await _publish(redis, stream, 3)
    seen: list[tuple[str, int]] = []

    async def handler(d: Delivery) -> None:
        seen.append((d.message.id, d.deliveries))

    c = StreamConsumer(redis, stream, "g", "c", handler, block_s=0, claim_idle_s=30)
    await c.ensure_group()
    real_xack = redis.xack
    failures = 1

    async def flaky_xack(*args: object) -> object:
        nonlocal failures
        if failures:
            failures -= 1
            raise aioredis.ConnectionError("connection reset while acknowledging")
        return await real_xack(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(redis, "xack", flaky_xack)
    with pytest.raises(ConsumerUnavailable):
        await c.run_once()
    assert (await redis.xpending(stream, "g"))["pending"] == 3
    assert await c.run_once() == 3  # the same entries again, redelivered
    assert seen == [("e0", 1), ("e1", 1), ("e2", 1), ("e0", 2), ("e1", 2), ("e2", 2)]
    assert (await redis.xpending(stream, "g"))["pending"] == 0
    assert await c.run_once() == 0
