"""Argument checks shared by every backend, so bad input fails the same way everywhere."""

from __future__ import annotations

MAX_KEY_LENGTH = 512


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_cost(value: object, capacity: int) -> int:
    """A cost is a whole number of units, 0 (a peek) up to the limiter's capacity."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"cost must be an integer, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"cost must be >= 0, got {value}")
    if value > capacity:
        raise ValueError(f"cost {value} exceeds capacity {capacity}: it could never be admitted")
    return value


def check_positive_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def check_key(key: object, *, max_length: int = MAX_KEY_LENGTH) -> str:
    """Keys are non-empty strings of at most ``max_length`` UTF-8 bytes."""
    if not isinstance(key, str):
        raise ValueError(f"key must be a str, got {type(key).__name__}")
    if not key:
        raise ValueError("key must not be empty")
    try:
        n = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("key must be valid Unicode text (it contains a lone surrogate)") from None
    if n > max_length:
        raise ValueError(f"key is {n} bytes; the maximum is {max_length}")
    return key
