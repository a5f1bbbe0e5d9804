"""Stripe-style idempotency keys and consumer de-duplication for origin services.

Stores: :class:`RedisStore` (fast), :class:`PostgresStore` (durable, authoritative),
:class:`LayeredStore` (both: Redis first, PostgreSQL decides). The protocol lives in
:class:`IdempotencyService`; :class:`IdempotencyMiddleware` applies it to ASGI apps and
:func:`idempotent_execute` to one operation::

    return await idempotent_execute(db, idempotency_key, "/payments", process)

See docs/idempotency.md.
"""

from edge_kv.origin._pg import ConnectionFactory, PgPool

from .dedup import PostgresDeduplicator, Processed, RedisDeduplicator, check_message_id
from .execute import idempotent_execute
from .fingerprint import MAX_IDEMPOTENCY_KEY_LENGTH, check_idempotency_key, fingerprint, scoped_key
from .layered_store import LayeredStore
from .middleware import IdempotencyMiddleware, header_principal
from .model import (
    BeginResult,
    FingerprintMismatch,
    IdempotencyError,
    IdempotencyStore,
    InFlight,
    Record,
    StoredResponse,
    StoreUnavailable,
)
from .postgres_store import PostgresStore
from .redis_store import RedisStore
from .service import DEFAULT_TTL_S, IdempotencyService, Outcome, default_storable

__all__ = [
    "DEFAULT_TTL_S",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "BeginResult",
    "ConnectionFactory",
    "FingerprintMismatch",
    "IdempotencyError",
    "IdempotencyMiddleware",
    "IdempotencyService",
    "IdempotencyStore",
    "InFlight",
    "LayeredStore",
    "Outcome",
    "PgPool",
    "PostgresDeduplicator",
    "PostgresStore",
    "Processed",
    "Record",
    "RedisDeduplicator",
    "RedisStore",
    "StoreUnavailable",
    "StoredResponse",
    "check_idempotency_key",
    "check_message_id",
    "default_storable",
    "fingerprint",
    "header_principal",
    "idempotent_execute",
    "scoped_key",
]
