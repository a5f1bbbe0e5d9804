"""How a stored response's headers are serialised (JSON list of [name, value] pairs)."""

from __future__ import annotations

import json
from typing import Any


def encode_headers(headers: tuple[tuple[str, str], ...]) -> str:
    return json.dumps([[k, v] for k, v in headers], separators=(",", ":"))


def decode_headers(raw: str | bytes | list[Any] | None) -> tuple[tuple[str, str], ...]:
    if raw is None or raw == b"" or raw == "":
        return ()
    items = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    return tuple((str(k), str(v)) for k, v in items)
