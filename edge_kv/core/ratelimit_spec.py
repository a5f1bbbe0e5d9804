"""Rate-limit policies described as plain dicts (JSON, ``wrangler.toml`` vars, test vectors).

One spec format for every backend, so a limit configured at the edge and at the origin
is written the same way::

    {"kind": "token_bucket", "name": "burst", "capacity": 10, "refill_rate": 5}
    {"kind": "sliding_log", "name": "per-minute", "limit": 60, "window_s": 60}
    {"kind": "sliding_window_counter", "name": "per-hour", "limit": 1000, "window_s": 3600}
    {"kind": "fixed_window", "name": "per-day", "limit": 10000, "window_s": 86400}

``name`` is optional (default ``"default"``). Unknown kinds or fields are a ``ValueError``,
never silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edge_kv.core.errors import InvalidInput
from edge_kv.core.ratelimit import FixedWindow, Policy, SlidingLog, SlidingWindowCounter, TokenBucket

_KINDS: dict[str, tuple[type[Any], tuple[str, ...]]] = {
    "token_bucket": (TokenBucket, ("capacity", "refill_rate")),
    "sliding_log": (SlidingLog, ("limit", "window_s")),
    "sliding_window_counter": (SlidingWindowCounter, ("limit", "window_s")),
    "fixed_window": (FixedWindow, ("limit", "window_s")),
}


def policy_from_spec(spec: Mapping[str, Any]) -> Policy:
    """Build the policy a spec describes; parameters are checked by the policy itself."""
    if not isinstance(spec, Mapping):
        raise InvalidInput(f"a policy spec must be a mapping, got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind not in _KINDS:
        raise InvalidInput(f"unknown policy kind {kind!r}; expected one of {sorted(_KINDS)}")
    cls, fields = _KINDS[kind]
    extra = set(spec) - {"kind", "name", *fields}
    if extra:
        raise InvalidInput(f"unknown fields for {kind}: {sorted(extra)}")
    missing = [f for f in fields if f not in spec]
    if missing:
        raise InvalidInput(f"missing fields for {kind}: {missing}")
    name = spec.get("name", "default")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"policy name must be a non-empty string, got {name!r}")
    policy: Policy = cls(*(spec[f] for f in fields), name=name)
    return policy


def policy_to_spec(policy: Policy) -> dict[str, Any]:
    """The inverse of :func:`policy_from_spec`."""
    if isinstance(policy, TokenBucket):
        return {
            "kind": "token_bucket",
            "name": policy.name,
            "capacity": policy.capacity,
            "refill_rate": policy.refill_rate,
        }
    kind = {
        SlidingLog: "sliding_log",
        SlidingWindowCounter: "sliding_window_counter",
        FixedWindow: "fixed_window",
    }[type(policy)]
    return {"kind": kind, "name": policy.name, "limit": policy.limit, "window_s": policy.window_s}
