"""The idempotency tables: the sections of this package's ``schema.sql``."""

from __future__ import annotations

from psycopg import sql

from edge_kv.origin._pg import schema_sections


def schema_statements(section: str, table: str) -> list[sql.Composed]:
    """The statements of one ``-- section:`` of schema.sql (``idempotency_keys`` or
    ``processed_messages``), for ``table``."""
    return schema_sections(__package__ or "edge_kv.origin.idempotency", section, table)
