"""The store's DDL, read from this package's ``schema.sql`` (private).

Same ``-- section:`` convention as the other origin packages (see
:func:`edge_kv.origin._pg.schema_sections`), with more placeholders: the store owns four
tables, a trigger function and a NOTIFY channel, all named from the events table. The
splitter keeps ``$$ ... $$`` bodies whole (they contain semicolons).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from psycopg import sql

from edge_kv.origin._pg import table_identifier

MAX_CHANNEL_BYTES = 63
"""PostgreSQL's identifier limit (NAMEDATALEN - 1), which also bounds NOTIFY channels."""


@dataclass(frozen=True)
class StoreNames:
    """Every name the store uses, derived from the events table name (``"table"`` or
    ``"schema.table"``): ``<events>_positions``, ``<events>_snapshots``,
    ``<events>_checkpoints`` in the same schema."""

    events: str
    positions: str
    snapshots: str
    checkpoints: str
    stream_version: str
    notify_fn: str
    channel: str

    @classmethod
    def for_table(cls, events: str, channel: str | None = None) -> StoreNames:
        table_identifier(events)  # validates
        schema, _, base = events.rpartition(".")
        prefix = f"{schema}." if schema else ""
        chan = channel or f"edge_kv_events:{events}"
        if len(chan.encode()) > MAX_CHANNEL_BYTES:
            raise ValueError(
                f"notify channel {chan!r} is longer than {MAX_CHANNEL_BYTES} bytes; pass channel="
            )
        return cls(
            events=events,
            positions=f"{prefix}{base}_positions",
            snapshots=f"{prefix}{base}_snapshots",
            checkpoints=f"{prefix}{base}_checkpoints",
            stream_version=f"{base}_stream_version_key",
            notify_fn=f"{prefix}{base}_notify",
            channel=chan,
        )


def _split(text: str) -> list[str]:
    """Statements separated by ``;``, except inside ``$$`` quoting; comment lines dropped."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("--")]
    body = "\n".join(lines)
    out: list[str] = []
    current: list[str] = []
    quoted = False
    i = 0
    while i < len(body):
        if body.startswith("$$", i):
            quoted = not quoted
            current.append("$$")
            i += 2
            continue
        ch = body[i]
        if ch == ";" and not quoted:
            stmt = "".join(current).strip()
            if stmt:
                out.append(stmt)
            current = []
        else:
            current.append(ch)
        i += 1
    tail = "".join(current).strip()
    if tail:
        out.append(tail)
    return out


def schema_statements(names: StoreNames, section: str = "store") -> list[sql.Composed]:
    """The statements of ``section`` with every placeholder quoted in."""
    text = resources.files(__package__).joinpath("schema.sql").read_text("utf-8")
    chunks = text.split("-- section: ")
    body = next((c.split("\n", 1)[1] for c in chunks[1:] if c.split("\n", 1)[0].strip() == section), None)
    if body is None:
        raise ValueError(f"schema.sql has no section {section!r}")
    fill = {
        "events": table_identifier(names.events),
        "positions": table_identifier(names.positions),
        "snapshots": table_identifier(names.snapshots),
        "checkpoints": table_identifier(names.checkpoints),
        "stream_version": sql.Identifier(names.stream_version),
        "notify_fn": table_identifier(names.notify_fn),
        "channel": sql.Literal(names.channel),
    }
    return [sql.SQL(stmt).format(**fill) for stmt in _split(body)]
