"""NATS JetStream publisher, with JetStream's de-duplication by ``Nats-Msg-Id``.

Needs the ``nats`` extra (``nats-py``); it is imported only by :meth:`connect`, so this
module can be imported without it when you pass your own JetStream context.

Each message is published to ``subject_prefix + topic`` with:

* ``Nats-Msg-Id: <event id>``: the server drops a second message with the same id
  within the stream's ``duplicate_window`` (default 2 minutes) and acknowledges it with
  ``duplicate: true``, so a relay that re-publishes after a crash usually causes no
  duplicate at all (outside the window, consumers still de-duplicate on the id);
* the event's headers, plus ``Edge-Kv-Topic``, ``Edge-Kv-Key`` and ``Edge-Kv-Created``;
* the payload as JSON.

:func:`message_from_nats` turns a received ``nats.aio.msg.Msg`` back into a
:class:`~.message.Message`. The stream itself (which subjects, retention, replicas,
``duplicate_window``) is yours to create.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import PublishFailed
from .message import Message

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.js import JetStreamContext

__all__ = ["NatsJetStreamPublisher", "message_from_nats"]

MSG_ID = "Nats-Msg-Id"
TOPIC = "Edge-Kv-Topic"
KEY = "Edge-Kv-Key"
CREATED = "Edge-Kv-Created"
_OURS = frozenset({MSG_ID, TOPIC, KEY, CREATED})


class NatsJetStreamPublisher:
    """Publishes to JetStream through ``js`` (``nats_client.jetstream()``); each message
    is acknowledged by the stream (``PubAck``) within ``timeout`` seconds or reported
    failed. ``duplicates`` counts acknowledgements the server flagged as duplicates."""

    def __init__(self, js: JetStreamContext, *, subject_prefix: str = "", timeout: float = 5.0) -> None:
        self.js = js
        self.subject_prefix = subject_prefix
        self.timeout = timeout
        self.duplicates = 0

    @classmethod
    async def connect(
        cls, servers: str | list[str] = "nats://127.0.0.1:4222", **options: Any
    ) -> tuple[NatsClient, NatsJetStreamPublisher]:
        """Connect to NATS (``nats.connect(servers, **connect_options)``) and return the
        client (close it with ``await nc.close()``) and a publisher on its JetStream.
        ``subject_prefix`` and ``timeout`` in ``options`` go to the publisher."""
        import nats  # the optional extra, only here

        prefix = options.pop("subject_prefix", "")
        timeout = options.pop("timeout", 5.0)
        options.setdefault("connect_timeout", 2)
        options.setdefault("max_reconnect_attempts", 3)
        nc = await nats.connect(servers, **options)
        return nc, cls(nc.jetstream(), subject_prefix=prefix, timeout=timeout)

    def subject_for(self, message: Message) -> str:
        return self.subject_prefix + message.topic

    async def _one(self, m: Message) -> BaseException | None:
        headers = {k: v for k, v in m.headers.items() if k not in _OURS}
        headers.update({MSG_ID: m.id, TOPIC: m.topic, KEY: m.key, CREATED: m.created.isoformat()})
        try:
            ack = await self.js.publish(
                self.subject_for(m), m.payload_json().encode(), timeout=self.timeout, headers=headers
            )
        except Exception as exc:  # nats errors, timeouts, no stream for the subject
            return PublishFailed(f"nats: {type(exc).__name__}: {exc}")
        if ack.duplicate:
            self.duplicates += 1
        return None

    async def publish_many(self, messages: Sequence[Message]) -> list[BaseException | None]:
        return list(await asyncio.gather(*(self._one(m) for m in messages)))


def message_from_nats(msg: Any) -> Message:
    """The :class:`~.message.Message` a NATS message (``nats.aio.msg.Msg``) carries."""
    hdrs: Mapping[str, str] = msg.headers or {}
    return Message(
        id=hdrs[MSG_ID],
        topic=hdrs.get(TOPIC, msg.subject),
        key=hdrs.get(KEY, ""),
        payload=json.loads(msg.data),
        headers={k: v for k, v in hdrs.items() if k not in _OURS},
        created=datetime.fromisoformat(hdrs[CREATED]),
    )
