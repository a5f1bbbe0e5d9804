"""Small helpers over Durable Object SQL storage (``ctx.storage``) as the Python SDK exposes it.

``ctx.storage.sql.exec`` is synchronous at the edge (SQLite runs in the object's thread)
and returns a cursor; through the SDK's binding wrapper ``cursor.toArray()`` yields a
list of dicts. These helpers read rows without assuming more than that, and await a
result only if a runtime hands back an awaitable.
"""

from __future__ import annotations

import inspect
from typing import Any


async def resolve(value: Any) -> Any:
    """Await ``value`` if it is awaitable (a JS promise or coroutine), else return it."""
    if inspect.isawaitable(value):
        return await value
    return value


def _plain(row: Any) -> dict[str, Any]:
    if isinstance(row, dict):
        return dict(row)
    to_py = getattr(row, "to_py", None)
    if to_py is not None:
        return dict(to_py())
    return dict(row)


async def sql_rows(storage: Any, query: str, *bindings: Any) -> list[dict[str, Any]]:
    """Run one SQL statement on ``storage.sql`` and return its rows as dicts."""
    cursor = await resolve(storage.sql.exec(query, *bindings))
    rows = await resolve(cursor.toArray())
    if hasattr(rows, "to_py") and not isinstance(rows, list):
        rows = rows.to_py()
    return [_plain(r) for r in rows]


async def sql_exec(storage: Any, query: str, *bindings: Any) -> None:
    """Run one SQL statement whose rows are not needed."""
    cursor = await resolve(storage.sql.exec(query, *bindings))
    await resolve(cursor.toArray())
