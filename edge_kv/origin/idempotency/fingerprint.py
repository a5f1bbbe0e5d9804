"""Request fingerprints, key validation and scoping (stdlib only).

The fingerprint of a request is ``sha256(METHOD, path?query, canonical body)``. A JSON
body (``application/json`` or any ``+json`` type) is canonicalised first - keys sorted,
no insignificant whitespace - so that two encodings of the same document match; any
other body (and JSON that does not parse) is hashed byte for byte.
"""

from __future__ import annotations

import hashlib
import json

MAX_IDEMPOTENCY_KEY_LENGTH = 255
"""Stripe's limit; UUIDs (36) and ULIDs (26) fit with room to spare."""


def check_idempotency_key(key: object, *, max_length: int = MAX_IDEMPOTENCY_KEY_LENGTH) -> str:
    """A key is 1..max_length visible ASCII characters (0x21-0x7E): no spaces, no control
    characters, nothing that could be mangled by a proxy. ValueError otherwise."""
    if not isinstance(key, str):
        raise ValueError(f"idempotency key must be a str, got {type(key).__name__}")
    if not key:
        raise ValueError("idempotency key must not be empty")
    if len(key) > max_length:
        raise ValueError(f"idempotency key is {len(key)} characters; the maximum is {max_length}")
    for ch in key:
        if not "\x21" <= ch <= "\x7e":
            raise ValueError(f"idempotency key contains {ch!r}; only visible ASCII (0x21-0x7E) is allowed")
    return key


def scoped_key(scope: str, key: str) -> str:
    """The storage key of ``key`` for the principal ``scope``. Length-prefixed, so no
    (scope, key) pair can produce another pair's storage key."""
    if not isinstance(scope, str):
        raise ValueError(f"scope must be a str, got {type(scope).__name__}")
    if "\x00" in scope:
        raise ValueError("scope must not contain NUL")
    return f"{len(scope)}:{scope}:{key}"


def is_json_content_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def canonical_body(body: bytes, content_type: str | None) -> bytes:
    """The bytes that get hashed: canonical JSON when the body is JSON, else ``body``."""
    if is_json_content_type(content_type) and body:
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return b"raw\x00" + body
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return b"json\x00" + text.encode("utf-8")
    return b"raw\x00" + body


def fingerprint(method: str, path: str, body: bytes = b"", content_type: str | None = None) -> str:
    """Hex SHA-256 of method, path (with its query string, as sent) and canonical body."""
    h = hashlib.sha256()
    h.update(method.upper().encode("ascii", "replace"))
    h.update(b"\x00")
    h.update(path.encode("utf-8", "surrogateescape"))
    h.update(b"\x00")
    h.update(hashlib.sha256(canonical_body(body, content_type)).digest())
    return h.hexdigest()
