"""Reading vars and secrets from a Worker's ``env`` with one set of rules.

Unset and empty are the same (``None``); an integer var that is set to something else is a
:class:`~edge_kv.core.errors.InvalidInput` naming the var, never a silent default.
"""

from __future__ import annotations

from typing import Any

from edge_kv.core.errors import InvalidInput

__all__ = ["env_binding", "env_flag", "env_int", "env_str"]

_TRUE = ("1", "true", "yes", "on")


def env_str(env: Any, name: str) -> str | None:
    """A string var from ``env``, ``None`` when unset or empty."""
    value = getattr(env, name, None)
    if value is None:
        return None
    text = str(value)
    return text or None


def env_flag(env: Any, name: str) -> bool:
    """A boolean var: ``1``/``true``/``yes``/``on`` (any case) is true, anything else false."""
    return (env_str(env, name) or "").lower() in _TRUE


def env_int(env: Any, name: str, default: int, lo: int, hi: int) -> int:
    """An integer var in ``[lo, hi]``; ``default`` when unset."""
    raw = env_str(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer, got {raw[:80]!r}") from None
    if not lo <= value <= hi:
        raise InvalidInput(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def env_binding(env: Any, var: str, default: str) -> Any:
    """The binding named by the var ``var`` (``default`` when unset), or ``None``.

    Lets a deployment point a feature at another binding without code changes
    (``EDGE_KV_LIMITS_KV = "LIMITS"``).
    """
    return getattr(env, env_str(env, var) or default, None)
