"""The NATS JetStream publisher against the real server at 127.0.0.1:4222
(EDGE_KV_NATS_URL): relay through it, and JetStream drops re-published events by
``Nats-Msg-Id``. An unreachable server fails these tests (CI runs NATS)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient

from edge_kv.origin._pg import PgPool
from edge_kv.origin.messaging import Message, NatsJetStreamPublisher, Outbox, Relay, message_from_nats

from .conftest import NATS_URL, unique


@pytest_asyncio.fixture
async def nats_pub() -> AsyncIterator[tuple[NatsClient, NatsJetStreamPublisher, str]]:
    """A publisher and a JetStream stream of its own (subjects ``<name>.>``), deleted after."""
    try:
        nc, pub = await NatsJetStreamPublisher.connect(NATS_URL, allow_reconnect=False)
    except Exception as exc:
        pytest.fail(f"NATS with JetStream is not reachable at {NATS_URL} (set EDGE_KV_NATS_URL): {exc}")
    name = unique("edgekv").replace("_", "-")
    js = nc.jetstream()
    await js.add_stream(name=name, subjects=[f"{name}.>"], duplicate_window=60)
    pub.subject_prefix = f"{name}."
    try:
        yield nc, pub, name
    finally:
        await js.delete_stream(name)
        await nc.close()


async def test_relay_through_jetstream_and_msg_id_deduplication(
    pool: PgPool, outbox: Outbox, nats_pub: tuple[NatsClient, NatsJetStreamPublisher, str]
) -> None:
    nc, pub, name = nats_pub
    async with pool.connection() as conn, conn.transaction():
        for i in range(20):
            await outbox.add(
                conn, topic="orders", key=f"k{i % 4}", payload={"i": i}, headers={"tenant": "t1"}
            )
    assert await Relay(outbox, pool, pub).drain() == 20
    js = nc.jetstream()
    assert (await js.stream_info(name)).state.messages == 20

    # The relay crashed before marking them published: it publishes them all again.
    async with pool.connection() as conn:
        cur = await conn.execute(
            f'SELECT id, topic, key, payload, headers, created FROM "{outbox.table}" ORDER BY seq'
        )
        again = [
            Message(id=r[0], topic=r[1], key=r[2], payload=r[3], headers=r[4], created=r[5])
            for r in await cur.fetchall()
        ]
    assert await pub.publish_many(again) == [None] * 20
    assert pub.duplicates == 20
    assert (await js.stream_info(name)).state.messages == 20  # JetStream dropped every duplicate

    sub = await js.pull_subscribe(f"{name}.>", durable=None, stream=name)
    fetched = await sub.fetch(20, timeout=5)
    got = [message_from_nats(m) for m in fetched]
    for m in fetched:
        await m.ack()
    await sub.unsubscribe()
    assert [m.id for m in got] == [m.id for m in again]
    by_key: dict[str, list[int]] = {}
    for g in got:
        by_key.setdefault(g.key, []).append(g.payload["i"])
        assert g.topic == "orders" and g.headers["tenant"] == "t1" and g.correlation_id == g.id
    assert all(v == sorted(v) for v in by_key.values())


async def test_a_subject_without_a_stream_is_a_failed_publish(
    nats_pub: tuple[NatsClient, NatsJetStreamPublisher, str],
) -> None:
    _, pub, _ = nats_pub
    lost = NatsJetStreamPublisher(pub.js, subject_prefix="no-such-stream-here.", timeout=1.0)
    [err] = await lost.publish_many([Message(id="x", topic="t", key="k", payload=1)])
    assert err is not None and "nats" in str(err)
