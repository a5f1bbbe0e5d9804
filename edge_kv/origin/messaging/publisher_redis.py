"""Redis Streams publisher: one ``XADD`` per message, pipelined per batch.

The stream of a message is ``stream_prefix + topic`` unless ``stream`` (a function of
the message) says otherwise: e.g. ``lambda m: f"orders:{crc32(m.key.encode()) % 8}"``
shards one topic over 8 streams by key, so that 8 consumers each read one stream in
order. ``maxlen`` caps each stream approximately (``XADD MAXLEN ~``); without it the
streams grow until trimmed by you. Fields: see :mod:`.message`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from edge_kv.origin import _redis

from .errors import PublishFailed
from .message import Message

__all__ = ["RedisStreamsPublisher"]


class RedisStreamsPublisher:
    """Publishes to Redis Streams on a ``redis.asyncio.Redis`` (or ``RedisCluster``)
    client. Each batch is one pipeline (not a transaction), bounded by ``timeout``
    seconds; on a transport failure every message of the batch is reported failed
    (some may have been stored: the relay publishes them again, consumers de-duplicate)."""

    def __init__(
        self,
        redis: Any,
        *,
        stream_prefix: str = "",
        stream: Callable[[Message], str] | None = None,
        maxlen: int | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.redis = _redis.prepare(redis)
        self.stream_prefix = stream_prefix
        self._stream = stream
        self.maxlen = maxlen
        self.timeout = timeout

    def stream_for(self, message: Message) -> str:
        return self._stream(message) if self._stream is not None else self.stream_prefix + message.topic

    async def publish_many(self, messages: Sequence[Message]) -> list[BaseException | None]:
        if not messages:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for m in messages:
            pipe.xadd(self.stream_for(m), m.to_fields(), maxlen=self.maxlen, approximate=True)
        try:
            replies = await _redis.bounded(
                pipe.execute(raise_on_error=False), self.timeout, "outbox publish", PublishFailed
            )
        except Exception as exc:  # transport failure: nothing is known to be stored
            err = exc if isinstance(exc, PublishFailed) else PublishFailed(f"redis: {_redis.describe(exc)}")
            return [err] * len(messages)
        return [r if isinstance(r, BaseException) else None for r in replies]
