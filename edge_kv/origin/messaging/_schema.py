"""The ``-- section:`` reader of this package's ``schema.sql`` (private).

Like :func:`edge_kv.origin._pg.schema_sections`, but a section may name several tables
and indexes: every ``{placeholder}`` is filled in with a quoted identifier given by the
caller.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from edge_kv.origin._pg import table_identifier


def statements(section: str, **names: str) -> list[sql.Composed]:
    """The statements of ``section`` with each ``{name}`` filled in from ``names``
    (``"schema.table"`` or ``"table"``; an index name is a bare identifier)."""
    text = (
        resources.files(__package__ or "edge_kv.origin.messaging").joinpath("schema.sql").read_text("utf-8")
    )
    chunks = text.split("-- section: ")
    body = next((c.split("\n", 1)[1] for c in chunks[1:] if c.split("\n", 1)[0].strip() == section), None)
    if body is None:
        raise ValueError(f"schema.sql has no section {section!r}")
    lines = [ln for ln in body.splitlines() if not ln.lstrip().startswith("--")]
    idents = {k: table_identifier(v) for k, v in names.items()}
    return [sql.SQL(s.strip()).format(**idents) for s in "\n".join(lines).split(";") if s.strip()]


def index_name(table: str, suffix: str) -> str:
    """``<table>_<suffix>`` without the schema (an index lives in its table's schema)."""
    return f"{table.split('.')[-1]}_{suffix}"


async def run(conn: psycopg.AsyncConnection[Any], stmts: list[sql.Composed]) -> None:
    """Run ``stmts`` in one transaction on ``conn`` (serialised across processes, so two
    services migrating at once do not race on ``CREATE ... IF NOT EXISTS``)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('edge_kv.messaging.schema', 0))")
        for stmt in stmts:
            await conn.execute(stmt)
