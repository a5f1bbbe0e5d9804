"""Rate-limit response headers, identical at the edge and at the origin.

``RateLimit-Policy`` and ``RateLimit`` follow the IETF httpapi draft
(draft-ietf-httpapi-ratelimit-headers, structured-field list form):

    RateLimit-Policy: "per-second";q=10;w=1, "per-hour";q=1000;w=3600
    RateLimit: "per-second";r=3;t=1

``Retry-After`` (RFC 9110) is added to refusals, in whole seconds rounded up.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from edge_kv.core.decision import US_PER_SECOND, Decision, ceil_div, most_restrictive
from edge_kv.core.errors import InvalidInput


class HasPolicy(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def limit(self) -> int: ...

    @property
    def window_us(self) -> int: ...


def _sf_string(value: str) -> str:
    if any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
        raise InvalidInput(f"policy name {value!r} must be printable ASCII")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def policy_header(policies: Iterable[HasPolicy]) -> str:
    """Value of ``RateLimit-Policy`` for the given policies."""
    return ", ".join(
        f"{_sf_string(p.name)};q={p.limit};w={max(1, ceil_div(p.window_us, US_PER_SECOND))}" for p in policies
    )


def ratelimit_header(decision: Decision) -> str:
    """Value of ``RateLimit`` for the tightest decision."""
    return f"{_sf_string(decision.policy)};r={max(0, decision.remaining)};t={decision.reset_after_s}"


def rate_limit_headers(policies: Sequence[HasPolicy], decisions: Sequence[Decision]) -> list[tuple[str, str]]:
    """All headers for a response: policy, current state, and ``Retry-After`` if refused."""
    combined = most_restrictive(list(decisions))
    headers = [
        ("RateLimit-Policy", policy_header(policies)),
        ("RateLimit", ratelimit_header(combined)),
    ]
    if not combined.allowed:
        headers.append(("Retry-After", str(combined.retry_after_s)))
    return headers
