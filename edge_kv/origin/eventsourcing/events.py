"""The event values: :class:`NewEvent` (what a writer appends), :class:`RecordedEvent`
(what the store returns: the event plus where and when it was stored) and
:class:`Snapshot`.

Event data and metadata are JSON objects (stored as ``jsonb``): a plain ``dict`` of
JSON values. ``schema_version`` is the version of the event *type's* data shape, for
upcasting (:mod:`.upcasting`); it is unrelated to the stream ``version``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["NewEvent", "RecordedEvent", "Snapshot"]

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class NewEvent:
    """An event to append. ``event_id`` defaults to a fresh UUID4 (use it as the message
    id when the event also leaves through an outbox); ``correlation_id``/``causation_id``
    link it to the request and the message that caused it."""

    type: str
    data: Mapping[str, Any]
    schema_version: int = 1
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    correlation_id: str | None = None
    causation_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.type:
            raise ValueError("event type must be a non-empty string")
        if isinstance(self.schema_version, bool) or self.schema_version < 1:
            raise ValueError(f"schema_version must be >= 1, got {self.schema_version!r}")


@dataclass(frozen=True)
class RecordedEvent:
    """A stored event. ``position`` is its global position (1, 2, 3, ... in commit order,
    no holes), ``version`` its number within ``stream`` (1, 2, 3, ...), ``recorded_at``
    the database clock at its transaction's start."""

    position: int
    stream: str
    version: int
    type: str
    data: JsonObject
    schema_version: int
    event_id: str
    correlation_id: str | None
    causation_id: str | None
    metadata: JsonObject
    recorded_at: datetime


@dataclass(frozen=True)
class Snapshot:
    """The state of a stream's aggregate after event ``version``, as the JSON object its
    ``snapshot_state`` returned; ``schema_version`` is the aggregate class's
    ``snapshot_version`` when it was taken (a mismatch means "replay instead")."""

    stream: str
    version: int
    schema_version: int
    state: JsonObject
