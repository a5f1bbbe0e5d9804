"""A small base for aggregates written as plain Python: state is the fold of events.

* A command is an ordinary method: it checks the rules against the current state, raises
  a :class:`~.errors.DomainError` to refuse, or calls :meth:`Aggregate.record` to emit an
  event. ``record`` applies the event at once through the same apply function replay
  uses, so the state after a command is exactly the state a reload would build.
* An apply function per event type (``@applies("Deposited")``) changes state from the
  event's data and never refuses: history is fact.
* Loading replays the stream, or restores the latest snapshot and replays the tail
  (:class:`~.repository.Repository`); events stored at an older schema version go
  through the class's :class:`~.upcasting.Upcasters` first.

::

    class Account(Aggregate):
        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.balance = 0

        def deposit(self, amount: int) -> None:
            if amount <= 0:
                raise DomainError("amount must be positive")
            self.record("Deposited", {"amount": amount})

        @applies("Deposited")
        def _deposited(self, data: dict[str, Any]) -> None:
            self.balance += data["amount"]

The constructor takes only the id and sets the state of an aggregate with no events.
Snapshots store :meth:`Aggregate.snapshot_state` (by default the public attributes, which
must then be JSON values; override both snapshot methods otherwise) under the class's
``snapshot_version``: bump it when the state's shape changes and old snapshots are
ignored (the aggregate is replayed instead).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Self, TypeVar

from .events import NewEvent, RecordedEvent, Snapshot
from .upcasting import Upcasters

__all__ = ["Aggregate", "applies"]

Applier = Callable[[Any, dict[str, Any]], None]
F = TypeVar("F", bound=Callable[..., None])

_MARK = "__edge_kv_applies__"


def applies(event_type: str) -> Callable[[F], F]:
    """Mark a method ``(self, data) -> None`` as the apply function of ``event_type``."""

    def deco(fn: F) -> F:
        setattr(fn, _MARK, event_type)
        return fn

    return deco


class Aggregate:
    """Base class; see the module docstring. ``id`` names the aggregate, ``version`` is
    the version of the last *stored* event folded in (0: none); events recorded since
    are :attr:`pending` until a repository saves them."""

    stream_prefix: ClassVar[str | None] = None
    """Streams are ``f"{stream_prefix}-{id}"``; default: the class name."""
    snapshot_version: ClassVar[int] = 1
    """Schema version of :meth:`snapshot_state`'s output; snapshots of another are ignored."""
    event_versions: ClassVar[Mapping[str, int]] = {}
    """Current schema version of each event type this class records (default 1)."""
    upcasters: ClassVar[Upcasters] = Upcasters()
    """Steps from older event schema versions to the current ones (applied on load)."""
    _appliers: ClassVar[dict[str, Applier]] = {}

    def __init__(self, id: str) -> None:
        self.id = id
        self.version = 0
        self._pending: list[NewEvent] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        appliers: dict[str, Applier] = {}
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                event_type = getattr(value, _MARK, None)
                if isinstance(event_type, str):
                    appliers[event_type] = value
        cls._appliers = appliers
        if "upcasters" not in vars(cls):  # registering on a subclass never changes its base
            cls.upcasters = cls.upcasters.copy()

    @classmethod
    def stream_name(cls, id: str) -> str:
        return f"{cls.stream_prefix or cls.__name__}-{id}"

    # -- commands --------------------------------------------------------------------
    def record(self, event_type: str, data: Mapping[str, Any] | None = None, **metadata: Any) -> None:
        """Emit an event: apply it now and keep it pending for the next save. Extra
        keyword arguments go to the event's metadata."""
        body = dict(data or {})
        self._apply(event_type, body)
        version = self.event_versions.get(event_type, 1)
        self._pending.append(NewEvent(event_type, body, schema_version=version, metadata=metadata))

    @property
    def pending(self) -> tuple[NewEvent, ...]:
        """Events recorded since the last load or save, oldest first."""
        return tuple(self._pending)

    def mark_saved(self, count: int) -> None:
        """The first ``count`` pending events are stored: advance :attr:`version`."""
        del self._pending[:count]
        self.version += count

    # -- replay ----------------------------------------------------------------------
    def apply_event(self, event: RecordedEvent) -> None:
        """Fold one stored event in (upcast first); it must be the next version."""
        if event.version != self.version + 1:
            raise ValueError(
                f"{self.stream_name(self.id)}: event version {event.version} after {self.version}"
            )
        if self.upcasters:
            event = self.upcasters.upcast(event)
        self._apply(event.type, event.data)
        self.version = event.version

    def _apply(self, event_type: str, data: dict[str, Any]) -> None:
        fn = self._appliers.get(event_type)
        if fn is None:
            raise LookupError(f"{type(self).__name__} has no apply function for event type {event_type!r}")
        fn(self, data)

    # -- snapshots -------------------------------------------------------------------
    def snapshot_state(self) -> dict[str, Any]:
        """The state to snapshot: by default every public attribute but ``id`` and
        ``version`` (JSON values only)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in ("id", "version")}

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot, id: str) -> Self:
        """An aggregate at ``snapshot.version`` with :meth:`snapshot_state` restored."""
        agg = cls(id)
        for key, value in snapshot.state.items():
            setattr(agg, key, value)
        agg.version = snapshot.version
        return agg

    def take_snapshot(self) -> Snapshot:
        if self._pending:
            raise ValueError("snapshot with pending events: save them first")
        return Snapshot(self.stream_name(self.id), self.version, self.snapshot_version, self.snapshot_state())
