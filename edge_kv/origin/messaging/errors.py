"""The errors of :mod:`edge_kv.origin.messaging`, under :class:`~edge_kv.core.errors.EdgeKvError`."""

from __future__ import annotations

from edge_kv.core.errors import Conflict, EdgeKvError, NotFound, Unavailable

__all__ = ["MessagingError", "PublishFailed", "SagaLeaseLost", "UnknownSaga"]


class MessagingError(EdgeKvError):
    """Root of the messaging errors."""

    code = "messaging_error"


class PublishFailed(MessagingError, Unavailable):
    """A broker did not accept a message (refused, timed out, rejected). Whether it was
    stored is unknown: the relay publishes it again later (at-least-once)."""

    code = "publish_failed"


class SagaLeaseLost(MessagingError, Conflict):
    """This orchestrator's lease on a saga expired and another orchestrator took the saga
    over; nothing was written. The new owner drives the saga on."""

    code = "saga_lease_lost"


class UnknownSaga(MessagingError, NotFound):
    """No saga with this id, or no definition registered for its type."""

    code = "unknown_saga"
