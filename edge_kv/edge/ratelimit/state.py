"""Stored limiter state: JSON encoding and the one decision step every edge backend runs.

A key's state is one JSON object ``{tier_name: [algorithm, state]}``: the Durable Object
keeps it in one SQLite row and the KV limiter in one KV value, so a decision reads one
value and writes one value (a single statement is atomic by itself). The arithmetic is
:func:`edge_kv.core.ratelimit.decide_tiers`; this module only converts the states.
A tier whose stored algorithm differs from the configured one (the configuration
changed) starts fresh rather than misreading the old state.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge_kv.core.decision import Decision
from edge_kv.core.ratelimit import (
    CounterState,
    FixedWindow,
    Policy,
    SlidingLog,
    SlidingWindowCounter,
    TokenBucket,
    WindowState,
    decide_tiers,
)
from edge_kv.core.ratelimit_spec import policy_to_spec

Stored = dict[str, list[Any]]


def algorithm_of(policy: Policy) -> str:
    """The spec ``kind`` of ``policy`` (stored next to its state)."""
    return str(policy_to_spec(policy)["kind"])


def initial_state(policy: Policy) -> object:
    if isinstance(policy, TokenBucket):
        return 0
    if isinstance(policy, SlidingLog):
        return []
    if isinstance(policy, SlidingWindowCounter):
        return CounterState()
    return WindowState()


def encode_state(policy: Policy, state: object) -> Any:
    if isinstance(state, CounterState):
        return [state.window, state.previous, state.current]
    if isinstance(state, WindowState):
        return [state.window, state.count]
    return state


def _ints(value: object, n: int | None) -> list[int]:
    if not isinstance(value, list) or (n is not None and len(value) != n):
        raise ValueError(f"bad stored state {value!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"bad stored state {value!r}")
    return list(value)


def decode_state(policy: Policy, raw: object) -> object:
    """Decode one tier's stored state; ``ValueError`` when it does not fit the policy."""
    if isinstance(policy, TokenBucket):
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ValueError(f"bad stored TAT {raw!r}")
        return raw
    if isinstance(policy, SlidingLog):
        return sorted(_ints(raw, None))
    if isinstance(policy, SlidingWindowCounter):
        w, p, c = _ints(raw, 3)
        return CounterState(w, p, c)
    if isinstance(policy, FixedWindow):
        w, c = _ints(raw, 2)
        return WindowState(w, c)
    raise TypeError(f"not a policy: {policy!r}")


def load_states(tiers: Sequence[Policy], stored: Stored | None) -> list[object]:
    """States for ``tiers`` from a stored object; missing, stale or corrupt tiers start fresh."""
    states: list[object] = []
    for policy in tiers:
        entry = (stored or {}).get(policy.name)
        state = initial_state(policy)
        if isinstance(entry, list) and len(entry) == 2 and entry[0] == algorithm_of(policy):
            with contextlib.suppress(ValueError):
                state = decode_state(policy, entry[1])
        states.append(state)
    return states


@dataclass(frozen=True, slots=True)
class Outcome:
    """Result of one decision step.

    ``stored`` is the object to write back, ``None`` when nothing must be written
    (refused, or a zero-cost peek). ``expires_us`` is the absolute time after which
    the stored state equals a fresh one, so the backend may delete it.
    """

    decision: Decision
    decisions: tuple[Decision, ...]
    stored: Stored | None
    expires_us: int


def decide_stored(tiers: Sequence[Policy], stored: Stored | None, now_us: int, cost: int) -> Outcome:
    """Decide ``cost`` units against every tier at ``now_us`` (all-or-nothing)."""
    states = load_states(tiers, stored)
    combined, decisions, new_states = decide_tiers(list(zip(tiers, states, strict=True)), now_us, cost)
    expires = now_us + max(d.reset_after_us for d in decisions)
    if not combined.allowed or cost == 0:
        return Outcome(combined, tuple(decisions), None, expires)
    new_stored: Stored = {
        p.name: [algorithm_of(p), encode_state(p, s)] for p, s in zip(tiers, new_states, strict=True)
    }
    return Outcome(combined, tuple(decisions), new_stored, expires)


def dumps(stored: Stored) -> str:
    return json.dumps(stored, separators=(",", ":"))


def loads(text: str | None) -> Stored | None:
    """Parse stored JSON; corrupt text is treated as no state (fail towards a fresh bucket)."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def decision_to_json(d: Decision) -> dict[str, Any]:
    return {
        "allowed": d.allowed,
        "limit": d.limit,
        "remaining": d.remaining,
        "retry_after_us": d.retry_after_us,
        "reset_after_us": d.reset_after_us,
        "policy": d.policy,
    }


def decision_from_json(value: object) -> Decision:
    """Inverse of :func:`decision_to_json`; ``ValueError`` on anything else."""
    if not isinstance(value, dict):
        raise ValueError(f"bad decision {value!r}")
    try:
        d = Decision(
            allowed=value["allowed"],
            limit=value["limit"],
            remaining=value["remaining"],
            retry_after_us=value["retry_after_us"],
            reset_after_us=value["reset_after_us"],
            policy=value["policy"],
        )
    except KeyError as exc:
        raise ValueError(f"bad decision {value!r}") from exc
    if not isinstance(d.allowed, bool) or not all(
        isinstance(x, int) and not isinstance(x, bool)
        for x in (d.limit, d.remaining, d.retry_after_us, d.reset_after_us)
    ):
        raise ValueError(f"bad decision {value!r}")
    return d
