"""Generate ``ratelimit.json``: decision vectors computed by the Python core.

Every backend (the core itself, the Redis Lua script, the edge Durable Object) replays
the same cases and must reproduce every field of every decision. Regenerate after an
intentional change to the arithmetic in ``edge_kv/core/ratelimit.py``::

    .venv/bin/python tests/vectors/generate.py          # rewrite tests/vectors/ratelimit.json
    .venv/bin/python tests/vectors/generate.py --check  # exit 1 if the file is stale

File format (``version`` 1)::

    {"version": 1, "cases": [
      {"name": str,
       "tiers": [policy spec, ...],       # edge_kv.core.ratelimit_spec format
       "steps": [{"now_us": int, "cost": int,
                  "decision": {allowed, limit, remaining, retry_after_us, reset_after_us, policy},
                  "tiers": [same fields per tier]}]}]}

Each case starts from empty state (a fresh key). ``decision`` is
``most_restrictive(tiers)``. Times are absolute microseconds; several cases use
present-day values (~1.7e15 us) to exercise exactness above 2**32 and above 1e14,
and some step the clock back.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge_kv.core.decision import Decision  # noqa: E402
from edge_kv.core.ratelimit import decide_tiers  # noqa: E402
from edge_kv.core.ratelimit_spec import policy_from_spec  # noqa: E402

OUT = Path(__file__).resolve().parent / "ratelimit.json"
NOW = 1_760_000_000_000_000  # 2025-10-09, microseconds
SEC = 1_000_000


def initial_state(kind: str) -> Any:
    from edge_kv.core.ratelimit import CounterState, WindowState

    return {
        "token_bucket": 0,
        "sliding_log": [],
        "sliding_window_counter": CounterState(),
        "fixed_window": WindowState(),
    }[kind]


def decision_dict(d: Decision) -> dict[str, Any]:
    return {
        "allowed": d.allowed,
        "limit": d.limit,
        "remaining": d.remaining,
        "retry_after_us": d.retry_after_us,
        "reset_after_us": d.reset_after_us,
        "policy": d.policy,
    }


def run_case(name: str, tiers: list[dict[str, Any]], steps: list[tuple[int, int]]) -> dict[str, Any]:
    policies = [policy_from_spec(t) for t in tiers]
    states = [initial_state(t["kind"]) for t in tiers]
    out = []
    for now_us, cost in steps:
        combined, per_tier, states = decide_tiers(list(zip(policies, states, strict=True)), now_us, cost)
        out.append(
            {
                "now_us": now_us,
                "cost": cost,
                "decision": decision_dict(combined),
                "tiers": [decision_dict(d) for d in per_tier],
            }
        )
    return {"name": name, "tiers": tiers, "steps": out}


def burst_then_refill(start: int, n: int, gap_us: int, cost: int = 1) -> list[tuple[int, int]]:
    return [(start + i * gap_us, cost) for i in range(n)]


def random_steps(
    rng: random.Random, start: int, n: int, max_cost: int, scale_us: int
) -> list[tuple[int, int]]:
    steps = []
    now = start
    for _ in range(n):
        r = rng.random()
        if r < 0.5:
            now += rng.randrange(0, scale_us // 10 + 1)  # bursts
        elif r < 0.85:
            now += rng.randrange(0, scale_us + 1)
        elif r < 0.95:
            now += rng.randrange(scale_us, 5 * scale_us + 1)  # long idle
        else:
            now = max(0, now - rng.randrange(0, scale_us // 4 + 1))  # clock steps back
        cost = 0 if rng.random() < 0.05 else rng.randint(1, max_cost)
        steps.append((now, cost))
    return steps


def random_spec(rng: random.Random, kind: str, name: str) -> dict[str, Any]:
    if kind == "token_bucket":
        return {
            "kind": kind,
            "name": name,
            "capacity": rng.randint(1, 20),
            "refill_rate": rng.choice([0.5, 1, 3, 7, 10, 33.3, 100, 1000]),
        }
    return {
        "kind": kind,
        "name": name,
        "limit": rng.randint(1, 20),
        "window_s": rng.choice([0.001, 0.25, 1, 1.5, 7, 60, 3600]),
    }


def build() -> dict[str, Any]:
    tb = {"kind": "token_bucket", "name": "burst", "capacity": 5, "refill_rate": 2}
    log = {"kind": "sliding_log", "name": "log", "limit": 5, "window_s": 10}
    swc = {"kind": "sliding_window_counter", "name": "approx", "limit": 5, "window_s": 10}
    fw = {"kind": "fixed_window", "name": "fixed", "limit": 5, "window_s": 10}
    cases = [
        run_case("token_bucket burst then refill", [tb], burst_then_refill(NOW, 12, 100_000)),
        run_case(
            "token_bucket cost 3 and peeks",
            [tb],
            [
                (NOW, 3),
                (NOW + 1, 3),
                (NOW + 1, 0),
                (NOW + 500_000, 3),
                (NOW + 1_000_000, 3),
                (NOW + 9 * SEC, 0),
            ],
        ),
        run_case("token_bucket small epoch", [tb], burst_then_refill(0, 8, 250_000)),
        run_case(
            "sliding_log fill, refuse, slide",
            [log],
            [
                *burst_then_refill(NOW, 7, SEC),
                (NOW + 10 * SEC, 1),
                (NOW + 10 * SEC + 1, 2),
                (NOW + 30 * SEC, 5),
            ],
        ),
        run_case("sliding_log same microsecond", [log], [(NOW, 1)] * 7),
        run_case(
            "sliding_log clock steps back",
            [log],
            [(NOW, 2), (NOW - 3 * SEC, 1), (NOW + 8 * SEC, 2), (NOW + 7 * SEC, 1), (NOW + 12 * SEC, 0)],
        ),
        run_case(
            "sliding_window_counter across windows",
            [swc],
            burst_then_refill(NOW - NOW % (10 * SEC) + 8 * SEC, 14, SEC // 2),
        ),
        run_case(
            "fixed_window boundary",
            [fw],
            [*burst_then_refill(NOW - NOW % (10 * SEC) + 9 * SEC, 8, SEC // 4), (NOW + 100 * SEC, 5)],
        ),
        run_case(
            "tiers 10/s and 20/min all-or-nothing",
            [
                {"kind": "token_bucket", "name": "per-second", "capacity": 10, "refill_rate": 10},
                {"kind": "sliding_log", "name": "per-minute", "limit": 20, "window_s": 60},
            ],
            burst_then_refill(NOW, 30, 50_000),
        ),
        run_case("tiers all four", [tb, log, swc, fw], burst_then_refill(NOW, 25, 700_000)),
    ]
    rng = random.Random(20260101)
    kinds = ["token_bucket", "sliding_log", "sliding_window_counter", "fixed_window"]
    for kind in kinds:
        for i in range(6):
            spec = random_spec(rng, kind, f"r{i}")
            cap = spec.get("capacity", spec.get("limit", 1))
            scale = rng.choice([1_000, 100_000, SEC, 10 * SEC])
            start = rng.choice([NOW, rng.randrange(0, 2**40)])
            cases.append(run_case(f"random {kind} #{i}", [spec], random_steps(rng, start, 40, cap, scale)))
    for i in range(6):
        specs = [
            random_spec(rng, kind, f"t{j}") for j, kind in enumerate(rng.sample(kinds, rng.randint(2, 4)))
        ]
        cap = min(s.get("capacity", s.get("limit", 1)) for s in specs)
        cases.append(
            run_case(f"random tiers #{i}", specs, random_steps(rng, NOW, 40, cap, rng.choice([10_000, SEC])))
        )
    return {"version": 1, "generated_by": "tests/vectors/generate.py", "cases": cases}


def render() -> str:
    """Compact JSON with one step per line, so diffs of a regeneration stay readable."""
    data = build()

    def compact(obj: Any) -> str:
        return json.dumps(obj, separators=(",", ":"))

    lines = ['{"version":1,"generated_by":' + json.dumps(data["generated_by"]) + ',"cases":[']
    for i, case in enumerate(data["cases"]):
        lines.append(
            '{"name":' + json.dumps(case["name"]) + ',"tiers":' + compact(case["tiers"]) + ',"steps":['
        )
        steps = [compact(step) for step in case["steps"]]
        lines.append(",\n".join(steps))
        lines.append("]}" + ("," if i < len(data["cases"]) - 1 else ""))
    lines.append("]}")
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == data
    return text


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale: run {Path(__file__).relative_to(ROOT)}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}: {len(build()['cases'])} cases")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
