"""The core reproduces the shared decision vectors in tests/vectors/ratelimit.json.

Edge-safe (runs in Pyodide too). The Redis Lua script (tests/origin/ratelimit) and the
edge Durable Object replay the same file; if this test fails after an intentional change
to the arithmetic, regenerate with ``python tests/vectors/generate.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge_kv.core.decision import Decision
from edge_kv.core.ratelimit import CounterState, WindowState, decide_tiers
from edge_kv.core.ratelimit_spec import policy_from_spec

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "ratelimit.json"
DATA: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))
INITIAL: dict[str, Any] = {
    "token_bucket": 0,
    "sliding_log": [],
    "sliding_window_counter": CounterState(),
    "fixed_window": WindowState(),
}


def as_dict(d: Decision) -> dict[str, Any]:
    return {
        "allowed": d.allowed,
        "limit": d.limit,
        "remaining": d.remaining,
        "retry_after_us": d.retry_after_us,
        "reset_after_us": d.reset_after_us,
        "policy": d.policy,
    }


def test_vectors_cover_every_policy_kind_and_both_outcomes() -> None:
    assert DATA["version"] == 1
    kinds = {t["kind"] for case in DATA["cases"] for t in case["tiers"]}
    assert kinds == set(INITIAL)
    outcomes = {s["decision"]["allowed"] for case in DATA["cases"] for s in case["steps"]}
    assert outcomes == {True, False}
    assert any(len(case["tiers"]) > 1 for case in DATA["cases"])
    assert any(s["now_us"] > 10**15 for case in DATA["cases"] for s in case["steps"])


@pytest.mark.parametrize("case", DATA["cases"], ids=[c["name"] for c in DATA["cases"]])
def test_core_reproduces_vectors(case: dict[str, Any]) -> None:
    policies = [policy_from_spec(t) for t in case["tiers"]]
    states = [INITIAL[t["kind"]] for t in case["tiers"]]
    for i, step in enumerate(case["steps"]):
        combined, tiers, states = decide_tiers(
            list(zip(policies, states, strict=True)), step["now_us"], step["cost"]
        )
        assert as_dict(combined) == step["decision"], f"step {i}"
        assert [as_dict(d) for d in tiers] == step["tiers"], f"step {i}"
