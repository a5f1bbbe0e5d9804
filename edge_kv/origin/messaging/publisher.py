"""The broker interface the relay publishes through.

A publisher has one method, :meth:`Publisher.publish_many`: publish a batch of messages
and say, per message, whether the broker accepted it. The relay calls it with messages
of *distinct keys* only (it publishes a key's next event only after the previous one
was accepted), so a publisher may send the batch concurrently or pipelined, in any
order. It must not raise for a message the broker refused: it returns the error in
that message's slot, and the relay backs off and retries that message (and holds back
the rest of its key).

Accepted means durably stored by the broker as far as the broker promises it (Redis:
the ``XADD`` reply; NATS JetStream: the ``PubAck``; Kafka: the produce acknowledgement
with ``acks=all``). A message may be published twice (the relay crashed before marking
it published, or an acknowledgement was lost): consumers de-duplicate on
:attr:`~.message.Message.id`, which every publisher must carry (a field, a header).

Implementations: :class:`~.publisher_redis.RedisStreamsPublisher` (the default) and
:class:`~.publisher_nats.NatsJetStreamPublisher`. A Kafka publisher is the same shape;
see docs/messaging.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .message import Message

__all__ = ["Publisher"]


@runtime_checkable
class Publisher(Protocol):
    async def publish_many(self, messages: Sequence[Message]) -> list[BaseException | None]:
        """Publish ``messages`` (distinct keys); one slot per message, in order: ``None``
        if the broker accepted it, else the error (a
        :class:`~.errors.PublishFailed` or the broker client's exception)."""
        ...
