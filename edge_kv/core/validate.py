"""Argument checks shared by every backend, so bad input fails the same way everywhere."""

from __future__ import annotations

from edge_kv.core.errors import InvalidInput

MAX_KEY_LENGTH = 512
# Integers that survive a trip through JavaScript numbers (Durable Object RPC arguments,
# KV options) unchanged: +-(2**53 - 1).
MAX_SAFE_INTEGER = 2**53 - 1


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an integer, got {type(value).__name__} {_short(value)}")
    if value <= 0:
        raise InvalidInput(f"{name} must be > 0, got {_short(value)}")
    return value


def check_cost(value: object, capacity: int) -> int:
    """A cost is a whole number of units, 0 (a peek) up to the limiter's capacity."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"cost must be an integer, got {type(value).__name__} {_short(value)}")
    if value < 0:
        raise InvalidInput(f"cost must be >= 0, got {_short(value)}")
    if value > capacity:
        raise InvalidInput(f"cost {_short(value)} exceeds capacity {capacity}: it could never be admitted")
    return value


def check_positive_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{name} must be a number, got {type(value).__name__} {_short(value)}")
    if not value > 0 or value != value or value == float("inf"):
        raise InvalidInput(f"{name} must be a finite number > 0, got {_short(value)}")
    return float(value)


def check_key(key: object, *, max_length: int = MAX_KEY_LENGTH) -> str:
    """Keys are non-empty strings of at most ``max_length`` UTF-8 bytes."""
    if not isinstance(key, str):
        raise InvalidInput(f"key must be a str, got {type(key).__name__}")
    if not key:
        raise InvalidInput("key must not be empty")
    try:
        n = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput("key must be valid Unicode text (it contains a lone surrogate)") from None
    if n > max_length:
        raise InvalidInput(f"key is {n} bytes; the maximum is {max_length}")
    return key


def check_int_range(name: str, value: object, lo: int, hi: int) -> int:
    """An integer (not a bool) in ``[lo, hi]``; :class:`InvalidInput` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an integer, got {type(value).__name__} {_short(value)}")
    if not lo <= value <= hi:
        raise InvalidInput(f"{name} must be between {lo} and {hi}, got {_short(value)}")
    return value


def check_js_int(name: str, value: object) -> int:
    """An integer JavaScript represents exactly (what may cross the runtime's FFI)."""
    return check_int_range(name, value, -MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)


def _short(value: object) -> str:
    text = (
        repr(value)
        if not isinstance(value, int) or abs(value) < 10**30
        else f"<{value.bit_length()}-bit integer>"
    )
    return text if len(text) <= 80 else text[:77] + "..."
