"""The origin end of the edge outbox: an ASGI app that verifies, de-duplicates, applies.

``EdgeOutboxEndpoint(handler, keyring=..., nonce_store=..., dedup=...)`` answers ``POST``
deliveries of :class:`edge_kv.edge.outbox.EdgeOutbox`:

1. the RFC 9421 signature is verified by
   :class:`~edge_kv.origin.httpsig.SignatureMiddleware` (body digest, key, age, nonce),
   and must cover the event id; a bad one is a **401** problem (the edge retries: a key
   not yet deployed here is fixed by deploying it, not by dropping events);
2. the envelope is parsed (``id``, ``source``, ``seq``, ``topic``, ``key``,
   ``created_ms``, ``payload``); a malformed one is a **400** (the edge dead-letters it);
3. the handler runs once per event id: with a
   :class:`~edge_kv.origin.idempotency.PostgresDeduplicator` it runs as
   ``handler(event, conn)`` inside ``process_once`` (its writes through ``conn`` and the
   id record commit together: exactly-once effect); with a
   :class:`~edge_kv.origin.idempotency.RedisDeduplicator` as ``handler(event, None)``
   (recorded first, forgotten if the handler fails: not atomic with the effect);
4. **200** ``{"id", "duplicate"}`` only after the effect committed — and for a duplicate,
   without running the handler again. :class:`EventRejected` from the handler is a
   **422** (dead-lettered at the edge); a database or store that cannot answer is a
   **503** with ``Retry-After``; any other exception a **500** (both retried).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from edge_kv.core.errors import InvalidInput
from edge_kv.core.httpsig import Keyring
from edge_kv.origin._asgi import Receive, Scope, Send, read_body, send_problem
from edge_kv.origin.httpsig import (
    DEFAULT_REQUIRED_COMPONENTS,
    EdgeIdentity,
    NonceStore,
    SignatureMiddleware,
    SignaturePolicy,
    edge_identity,
    target_uri_from_scope,
)
from edge_kv.origin.idempotency import PostgresDeduplicator, RedisDeduplicator, StoreUnavailable

__all__ = ["OUTBOX_ISSUER", "EdgeEvent", "EdgeOutboxEndpoint", "EventHandler", "EventRejected", "parse_event"]

log = logging.getLogger("edge_kv.origin.edge_outbox")

OUTBOX_ISSUER = "edge-outbox"  # what edge_kv.edge.outbox signs as X-Edge-Issuer
REQUIRED_COMPONENTS = (*DEFAULT_REQUIRED_COMPONENTS, "x-edge-event-id")
MAX_BODY_BYTES = 1 << 20


class EventRejected(InvalidInput):
    """Raised by a handler for an event it will never accept (422: the edge dead-letters
    it instead of retrying)."""

    status = 422
    code = "event_rejected"


@dataclass(frozen=True)
class EdgeEvent:
    """One delivered outbox entry. ``seq`` grows by one per entry of ``source`` (one
    Durable Object), in the order the edge wrote them."""

    id: str
    source: str
    seq: int
    topic: str
    key: str
    created_ms: int
    payload: Any
    identity: EdgeIdentity | None = field(default=None, repr=False)


EventHandler = Callable[[EdgeEvent, Any], Awaitable[None]]


def _field(doc: dict[str, Any], name: str, kind: type) -> Any:
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, kind) or (kind is str and not value):
        raise InvalidInput(
            f"envelope member {name!r} must be a {'non-empty string' if kind is str else 'integer'}"
        )
    return value


def parse_event(body: bytes, identity: EdgeIdentity | None = None) -> EdgeEvent:
    """The envelope the edge sends; :class:`InvalidInput` when it is not one."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("the body must be a JSON object")
    if "payload" not in doc:
        raise InvalidInput("envelope member 'payload' is missing")
    return EdgeEvent(
        id=_field(doc, "id", str),
        source=_field(doc, "source", str),
        seq=_field(doc, "seq", int),
        topic=_field(doc, "topic", str),
        key=_field(doc, "key", str),
        created_ms=_field(doc, "created_ms", int),
        payload=doc["payload"],
        identity=identity,
    )


class EdgeOutboxEndpoint:
    """ASGI app; see the module docstring. Mount it at the URL the edge's
    ``EDGE_KV_OUTBOX_URL`` names (it answers every path it is given)."""

    def __init__(
        self,
        handler: EventHandler,
        *,
        keyring: Keyring,
        nonce_store: NonceStore,
        dedup: PostgresDeduplicator | RedisDeduplicator,
        policy: SignaturePolicy | None = None,
        target_uri: Callable[[Scope], str] = target_uri_from_scope,
        clock: Callable[[], float] = time.time,
        max_body_bytes: int = MAX_BODY_BYTES,
        retry_after_s: int = 1,
    ) -> None:
        if not isinstance(dedup, (PostgresDeduplicator, RedisDeduplicator)):
            raise InvalidInput("dedup must be a PostgresDeduplicator or a RedisDeduplicator")
        self.handler = handler
        self.dedup = dedup
        self.retry_after_s = retry_after_s
        self.max_body_bytes = max_body_bytes
        self.app = SignatureMiddleware(
            self._inner,
            keyring=keyring,
            nonce_store=nonce_store,
            policy=policy or SignaturePolicy(required_components=REQUIRED_COMPONENTS),
            clock=clock,
            target_uri=target_uri,
            max_body_bytes=max_body_bytes,
            realm="edge-outbox",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            while message["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                message = await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] == "http" and scope["method"] != "POST":
            await send_problem(
                send, 405, "deliveries are POSTed", [("allow", "POST")], instance=scope.get("path")
            )
            return
        await self.app(scope, receive, send)

    async def apply(self, event: EdgeEvent) -> bool:
        """Run the handler once for ``event.id``; True if it ran, False for a duplicate."""
        if isinstance(self.dedup, PostgresDeduplicator):
            processed = await self.dedup.process_once(event.id, lambda conn: self.handler(event, conn))
            return not processed.duplicate
        return await self.dedup.handle(event.id, lambda: self.handler(event, None))

    async def _inner(self, scope: Scope, receive: Receive, send: Send) -> None:
        instance = scope.get("path")
        body = await read_body(receive, self.max_body_bytes)
        identity = edge_identity(scope)
        try:
            if identity is None or identity.issuer != OUTBOX_ISSUER:
                raise InvalidInput(
                    f"the signature does not vouch for an outbox delivery (issuer {OUTBOX_ISSUER!r})"
                )
            event = parse_event(body, identity)
            if identity.covered.get("x-edge-event-id") != event.id:
                raise InvalidInput("the signed X-Edge-Event-Id differs from the envelope's id")
        except InvalidInput as exc:
            await send_problem(send, 400, str(exc), instance=instance)
            return
        try:
            ran = await self.apply(event)
        except EventRejected as exc:
            await send_problem(send, 422, str(exc), instance=instance, event_id=event.id)
            return
        except (StoreUnavailable, psycopg.Error, OSError) as exc:
            log.warning("edge outbox event %s not applied (store unavailable): %s", event.id, exc)
            await send_problem(
                send,
                503,
                "the event could not be recorded; try again",
                [("retry-after", str(self.retry_after_s))],
                instance=instance,
                event_id=event.id,
            )
            return
        except Exception:
            log.exception("edge outbox handler failed for event %s", event.id)
            await send_problem(send, 500, "the handler failed", instance=instance, event_id=event.id)
            return
        out = json.dumps({"id": event.id, "duplicate": not ran}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(out)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": out, "more_body": False})
