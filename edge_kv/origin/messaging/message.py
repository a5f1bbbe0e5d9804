"""The event as it travels: :class:`Message`, its wire form, and the correlation headers.

Every event carries a ``correlation-id`` header (the conversation it belongs to; an event
that starts one gets its own id) and, when it was caused by another event, a
``causation-id`` header (that event's id). :func:`event_headers` builds them; the
:class:`~.outbox.Outbox` fills in a missing ``correlation-id``; the saga orchestrator sets
both on everything it emits and hands them to its steps.

The wire form (Redis Streams fields, NATS headers) is the same everywhere: ``id``,
``topic``, ``key``, ``payload`` (JSON text), ``headers`` (JSON object of strings) and
``created`` (ISO 8601, UTC).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edge_kv.core.errors import InvalidInput

__all__ = ["CAUSATION_ID", "CORRELATION_ID", "Message", "event_headers", "new_event_id"]

CORRELATION_ID = "correlation-id"
CAUSATION_ID = "causation-id"

MAX_ID_BYTES = 512  # the de-duplication stores' limit on message ids


def new_event_id() -> str:
    """A fresh event id (a random UUID, text)."""
    return str(uuid.uuid4())


def event_headers(
    correlation_id: str | None = None,
    causation_id: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Headers for an event caused by another: ``event_headers(parent.correlation_id,
    parent.id)``. Missing values are left out (the outbox fills in ``correlation-id``)."""
    headers = dict(extra or {})
    if correlation_id is not None:
        headers[CORRELATION_ID] = correlation_id
    if causation_id is not None:
        headers[CAUSATION_ID] = causation_id
    return headers


def check_text(name: str, value: object, *, max_bytes: int = MAX_ID_BYTES) -> str:
    if not isinstance(value, str) or not value or "\x00" in value or len(value.encode()) > max_bytes:
        raise InvalidInput(f"{name} must be a non-empty string of at most {max_bytes} bytes without NUL")
    return value


def check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (headers or {}).items():
        if not isinstance(k, str) or not k or not isinstance(v, str):
            raise InvalidInput(f"headers must map non-empty strings to strings, got {k!r}: {v!r}")
        out[k] = v
    return out


@dataclass(frozen=True, slots=True)
class Message:
    """One event. ``id`` is stable across re-publication: consumers de-duplicate on it."""

    id: str
    topic: str
    key: str
    payload: Any
    headers: Mapping[str, str] = field(default_factory=dict)
    created: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def correlation_id(self) -> str:
        return self.headers.get(CORRELATION_ID, self.id)

    @property
    def causation_id(self) -> str | None:
        return self.headers.get(CAUSATION_ID)

    def payload_json(self) -> str:
        return json.dumps(self.payload, separators=(",", ":"), sort_keys=True)

    def to_fields(self) -> dict[str, str]:
        """The Redis Streams entry (field -> value)."""
        return {
            "id": self.id,
            "topic": self.topic,
            "key": self.key,
            "payload": self.payload_json(),
            "headers": json.dumps(dict(self.headers), separators=(",", ":"), sort_keys=True),
            "created": self.created.astimezone(UTC).isoformat(),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes] | Mapping[str, str]) -> Message:
        """Read a Redis Streams entry written by :meth:`to_fields` (bytes or str keys)."""
        f = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in fields.items()
        }
        try:
            return cls(
                id=f["id"],
                topic=f["topic"],
                key=f["key"],
                payload=json.loads(f["payload"]),
                headers=json.loads(f.get("headers", "{}")),
                created=datetime.fromisoformat(f["created"]),
            )
        except (KeyError, ValueError) as exc:
            raise InvalidInput(f"not an edge_kv message: {exc}") from exc
