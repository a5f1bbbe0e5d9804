"""Reliable messaging across services: the transactional outbox, its relay, broker
publishers, a Redis Streams consumer runner with an inbox, and a saga orchestrator.

* :class:`Outbox` - ``add(conn, topic=, key=, payload=)`` writes an event in the
  caller's PostgreSQL transaction: the state change and its event commit together.
* :class:`Relay` - publishes committed events at least once, each key in commit order,
  with any number of relays at once (``FOR UPDATE SKIP LOCKED``, ``LISTEN/NOTIFY``).
* :class:`Publisher` - the broker interface: :class:`RedisStreamsPublisher` (default),
  :class:`NatsJetStreamPublisher` (``Nats-Msg-Id`` de-duplication; ``nats`` extra).
* :class:`StreamConsumer` - consumer groups with take-over of a crashed consumer's
  messages (``XAUTOCLAIM``), retries, dead-lettering, ack after the effect;
  :class:`Inbox` makes the effect exactly-once (the existing ``PostgresDeduplicator``).
* :class:`SagaOrchestrator` - steps with compensations, resumed after a crash.

Guarantees and what they do not cover: docs/messaging.md.
"""

from .consumer import ConsumerMetrics, Delivery, Handler, StreamConsumer
from .errors import MessagingError, PublishFailed, SagaLeaseLost, UnknownSaga
from .inbox import Inbox, InboxMetrics
from .message import CAUSATION_ID, CORRELATION_ID, Message, event_headers, new_event_id
from .outbox import DeadLetter, Outbox, OutboxStats
from .publisher import Publisher
from .publisher_nats import NatsJetStreamPublisher, message_from_nats
from .publisher_redis import RedisStreamsPublisher
from .relay import Relay, RelayMetrics
from .saga import (
    COMPENSATED,
    COMPENSATING,
    COMPLETED,
    RUNNING,
    STUCK,
    SagaDefinition,
    SagaOrchestrator,
    SagaRecord,
    SagaStep,
    StepContext,
)

__all__ = [
    "CAUSATION_ID",
    "COMPENSATED",
    "COMPENSATING",
    "COMPLETED",
    "CORRELATION_ID",
    "RUNNING",
    "STUCK",
    "ConsumerMetrics",
    "DeadLetter",
    "Delivery",
    "Handler",
    "Inbox",
    "InboxMetrics",
    "Message",
    "MessagingError",
    "NatsJetStreamPublisher",
    "Outbox",
    "OutboxStats",
    "PublishFailed",
    "Publisher",
    "RedisStreamsPublisher",
    "Relay",
    "RelayMetrics",
    "SagaDefinition",
    "SagaLeaseLost",
    "SagaOrchestrator",
    "SagaRecord",
    "SagaStep",
    "StepContext",
    "StreamConsumer",
    "UnknownSaga",
    "event_headers",
    "message_from_nats",
    "new_event_id",
]
