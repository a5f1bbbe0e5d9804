"""The outbox's tables in a Durable Object's SQLite storage, and synchronous row operations.

Synchronous on purpose: ``ctx.storage.sql.exec`` is synchronous at the edge, so an entry
can be written inside ``ctx.storage.transactionSync(...)`` next to the object's own state
change (one SQLite transaction), or inside ``ctx.storage.transaction(...)``.

Tables (names prefixed ``edge_kv_outbox``, never touched by anything else):

* ``edge_kv_outbox``: pending entries, ``seq`` ascending is delivery order;
* ``edge_kv_outbox_seq``: one row, the last ``seq`` handed out (so a sequence number is
  never reused, even after every entry was delivered and deleted);
* ``edge_kv_outbox_dead``: dead letters with their attempts and last error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DeadLetter", "OutboxEntry", "OutboxTables"]

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS edge_kv_outbox ("
    " seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, topic TEXT NOT NULL,"
    " key TEXT NOT NULL, payload TEXT NOT NULL, created_ms INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0, next_attempt_ms INTEGER NOT NULL DEFAULT 0,"
    " last_error TEXT)",
    "CREATE TABLE IF NOT EXISTS edge_kv_outbox_seq (id INTEGER PRIMARY KEY CHECK (id = 1), last_seq INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS edge_kv_outbox_dead ("
    " seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL, topic TEXT NOT NULL, key TEXT NOT NULL,"
    " payload TEXT NOT NULL, created_ms INTEGER NOT NULL, attempts INTEGER NOT NULL,"
    " last_error TEXT, dead_ms INTEGER NOT NULL)",
)
_COLUMNS = "seq, event_id, topic, key, payload, created_ms, attempts, next_attempt_ms, last_error"


@dataclass(frozen=True)
class OutboxEntry:
    """A pending entry; ``payload`` is its JSON text."""

    seq: int
    event_id: str
    topic: str
    key: str
    payload: str
    created_ms: int
    attempts: int = 0
    next_attempt_ms: int = 0
    last_error: str | None = None


@dataclass(frozen=True)
class DeadLetter:
    """An entry given up on: after ``attempts`` attempts, the last one failing with ``last_error``."""

    seq: int
    event_id: str
    topic: str
    key: str
    payload: str
    created_ms: int
    attempts: int
    last_error: str | None
    dead_ms: int


def _rows(cursor: Any) -> list[dict[str, Any]]:
    rows = cursor.toArray()
    if hasattr(rows, "to_py") and not isinstance(rows, list):
        rows = rows.to_py()
    out = []
    for row in rows:
        if not isinstance(row, dict):
            to_py = getattr(row, "to_py", None)
            row = to_py() if to_py is not None else row
        out.append(dict(row))
    return out


def _entry(row: dict[str, Any]) -> OutboxEntry:
    return OutboxEntry(
        int(row["seq"]),
        str(row["event_id"]),
        str(row["topic"]),
        str(row["key"]),
        str(row["payload"]),
        int(row["created_ms"]),
        int(row["attempts"]),
        int(row["next_attempt_ms"]),
        None if row["last_error"] is None else str(row["last_error"]),
    )


class OutboxTables:
    """Row operations over ``storage.sql`` (every method is one or two statements)."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self._ready = False

    def ensure_schema(self) -> None:
        for stmt in SCHEMA:
            _rows(self.storage.sql.exec(stmt))
        self._ready = True

    def _exec(self, query: str, *bindings: Any) -> list[dict[str, Any]]:
        if not self._ready:
            self.ensure_schema()
        try:
            return _rows(self.storage.sql.exec(query, *bindings))
        except Exception as exc:
            # The tables were created inside a transaction that then rolled back.
            if "no such table" not in str(exc):
                raise
            self.ensure_schema()
            return _rows(self.storage.sql.exec(query, *bindings))

    def insert(self, event_id: str, topic: str, key: str, payload: str, created_ms: int) -> int:
        """Append an entry; returns its sequence number (1, 2, ... per object, never reused)."""
        seq = int(
            self._exec(
                "INSERT INTO edge_kv_outbox_seq (id, last_seq) VALUES (1, 1)"
                " ON CONFLICT(id) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq"
            )[0]["last_seq"]
        )
        self._exec(
            "INSERT INTO edge_kv_outbox (seq, event_id, topic, key, payload, created_ms)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            seq,
            event_id,
            topic,
            key,
            payload,
            created_ms,
        )
        return seq

    def head(self) -> OutboxEntry | None:
        """The oldest pending entry (the only one that may be delivered next)."""
        rows = self._exec(f"SELECT {_COLUMNS} FROM edge_kv_outbox ORDER BY seq LIMIT 1")
        return _entry(rows[0]) if rows else None

    def pending(self, limit: int = 1000) -> list[OutboxEntry]:
        rows = self._exec(f"SELECT {_COLUMNS} FROM edge_kv_outbox ORDER BY seq LIMIT ?", limit)
        return [_entry(r) for r in rows]

    def pending_count(self) -> int:
        return int(self._exec("SELECT count(*) AS n FROM edge_kv_outbox")[0]["n"])

    def delivered(self, seq: int) -> None:
        self._exec("DELETE FROM edge_kv_outbox WHERE seq = ?", seq)

    def failed(self, seq: int, attempts: int, next_attempt_ms: int, error: str) -> None:
        self._exec(
            "UPDATE edge_kv_outbox SET attempts = ?, next_attempt_ms = ?, last_error = ? WHERE seq = ?",
            attempts,
            next_attempt_ms,
            error,
            seq,
        )

    def dead_letter(self, entry: OutboxEntry, attempts: int, error: str, now_ms: int) -> None:
        """Move ``entry`` to the dead letters (one transaction when called in ``transactionSync``)."""
        self._exec(
            "INSERT OR REPLACE INTO edge_kv_outbox_dead"
            " (seq, event_id, topic, key, payload, created_ms, attempts, last_error, dead_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            entry.seq,
            entry.event_id,
            entry.topic,
            entry.key,
            entry.payload,
            entry.created_ms,
            attempts,
            error,
            now_ms,
        )
        self._exec("DELETE FROM edge_kv_outbox WHERE seq = ?", entry.seq)

    def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        rows = self._exec(
            "SELECT seq, event_id, topic, key, payload, created_ms, attempts, last_error, dead_ms"
            " FROM edge_kv_outbox_dead ORDER BY seq LIMIT ?",
            limit,
        )
        return [
            DeadLetter(
                int(r["seq"]),
                str(r["event_id"]),
                str(r["topic"]),
                str(r["key"]),
                str(r["payload"]),
                int(r["created_ms"]),
                int(r["attempts"]),
                None if r["last_error"] is None else str(r["last_error"]),
                int(r["dead_ms"]),
            )
            for r in rows
        ]

    def forget_dead_letter(self, seq: int) -> bool:
        found = bool(self._exec("SELECT 1 AS x FROM edge_kv_outbox_dead WHERE seq = ?", seq))
        self._exec("DELETE FROM edge_kv_outbox_dead WHERE seq = ?", seq)
        return found
