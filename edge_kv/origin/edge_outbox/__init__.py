"""Origin side of the edge outbox (:mod:`edge_kv.edge.outbox`): an ASGI endpoint that
verifies the edge's RFC 9421 signature, de-duplicates by event id and runs your handler
once per event. See docs/messaging.md, "Edge outbox".
"""

from edge_kv.origin.edge_outbox.endpoint import (
    OUTBOX_ISSUER,
    EdgeEvent,
    EdgeOutboxEndpoint,
    EventHandler,
    EventRejected,
    parse_event,
)

__all__ = ["OUTBOX_ISSUER", "EdgeEvent", "EdgeOutboxEndpoint", "EventHandler", "EventRejected", "parse_event"]
