"""The edge outbox: a Durable Object writes its state change and an outbox entry in one
storage transaction; its alarm delivers the entries, signed (RFC 9421), in order, with
backoff and a dead-letter table, to an origin endpoint that de-duplicates by event id
(``edge_kv.origin.edge_outbox``). See docs/messaging.md, "Edge outbox".
"""

from edge_kv.core.outbox import DeliveryPolicy
from edge_kv.edge.outbox.outbox import DeliveryReport, EdgeOutbox, Fetch
from edge_kv.edge.outbox.settings import OUTBOX_URL_VAR, outbox_from_env
from edge_kv.edge.outbox.signing import (
    OUTBOX_ISSUER,
    SIGNED_COMPONENTS,
    SIGNING_KEYS_VAR,
    OutboxSigner,
    SigningUnavailable,
    signer_from_env,
)
from edge_kv.edge.outbox.store import DeadLetter, OutboxEntry

__all__ = [
    "OUTBOX_ISSUER",
    "OUTBOX_URL_VAR",
    "SIGNED_COMPONENTS",
    "SIGNING_KEYS_VAR",
    "DeadLetter",
    "DeliveryPolicy",
    "DeliveryReport",
    "EdgeOutbox",
    "Fetch",
    "OutboxEntry",
    "OutboxSigner",
    "SigningUnavailable",
    "outbox_from_env",
    "signer_from_env",
]
