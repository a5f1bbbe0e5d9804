"""Upcasting: reading events stored under an older schema version of their type as the
current one, without rewriting the store.

An :class:`Upcasters` registry holds one function per ``(type, from_version)`` that turns
the data of version *v* into the data of version *v + 1* (and may rename the type). Reading
applies the chain until no step is registered, so an event written at version 1 is seen
by aggregates and projections exactly as if it had been written at the current version.
Stored rows are never changed: old code, audits and rebuilds read the same history.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .events import RecordedEvent

__all__ = ["Upcaster", "Upcasters"]

Upcaster = Callable[[dict[str, Any]], dict[str, Any] | tuple[str, dict[str, Any]]]
"""``data -> new data`` or ``data -> (new type, new data)``: one schema-version step."""


class Upcasters:
    """``(type, from_version) -> step``. Register with :meth:`add` or as a decorator::

    upcasters = Upcasters()

    @upcasters.register("Deposited", 1)
    def _cents(data):  # v1 stored euros as a float; v2 stores integer cents
        return {"amount_cents": round(data["amount"] * 100)}
    """

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Upcaster] = {}

    def add(self, type: str, from_version: int, step: Upcaster) -> None:
        key = (type, from_version)
        if key in self._steps:
            raise ValueError(f"an upcaster for {type!r} version {from_version} is already registered")
        self._steps[key] = step

    def register(self, type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        def deco(step: Upcaster) -> Upcaster:
            self.add(type, from_version, step)
            return step

        return deco

    def copy(self) -> Upcasters:
        other = Upcasters()
        other._steps = dict(self._steps)
        return other

    def __bool__(self) -> bool:
        return bool(self._steps)

    def upcast(self, event: RecordedEvent) -> RecordedEvent:
        """``event`` at the newest schema version the registered steps reach (the same
        object when no step applies)."""
        if not self._steps:
            return event
        type_, version, data = event.type, event.schema_version, event.data
        for _ in range(10_000):  # bounded: a registry with a cycle raises below
            step = self._steps.get((type_, version))
            if step is None:
                break
            out = step(dict(data))
            if isinstance(out, tuple):
                type_, data = out
            else:
                data = out
            version += 1
        else:
            raise ValueError(f"upcasters for {event.type!r} do not terminate")
        if version == event.schema_version:
            return event
        return dataclasses.replace(event, type=type_, schema_version=version, data=data)
