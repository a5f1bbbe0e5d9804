"""The answer every limiter gives, whatever its algorithm or backend."""

from __future__ import annotations

from dataclasses import dataclass

US_PER_SECOND = 1_000_000


def ceil_div(a: int, b: int) -> int:
    """Integer ceiling division for non-negative ``b`` (exact, no floats)."""
    return -((-a) // b)


@dataclass(frozen=True, slots=True)
class Decision:
    """One rate-limit decision.

    ``retry_after_us`` is 0 when allowed; otherwise the earliest time from now at which
    the same request could be admitted (assuming no other traffic).
    ``reset_after_us`` is the time from now until the limiter is back to its full
    quota (bucket full / window empty) if no more requests arrive.
    """

    allowed: bool
    limit: int
    remaining: int
    retry_after_us: int
    reset_after_us: int
    policy: str = "default"

    @property
    def retry_after_s(self) -> int:
        """Whole seconds for a ``Retry-After`` header (rounded up, at least 1 when refused)."""
        if self.allowed:
            return 0
        return max(1, ceil_div(self.retry_after_us, US_PER_SECOND))

    @property
    def reset_after_s(self) -> int:
        """Whole seconds until full quota, rounded up (the ``t`` of the ``RateLimit`` header)."""
        return ceil_div(self.reset_after_us, US_PER_SECOND)


def most_restrictive(decisions: list[Decision]) -> Decision:
    """Combine tier decisions: refused if any refuses; the tightest numbers win."""
    if not decisions:
        raise ValueError("at least one decision is required")
    refused = [d for d in decisions if not d.allowed]
    if refused:
        return max(refused, key=lambda d: (d.retry_after_us, -d.remaining))
    return min(decisions, key=lambda d: (d.remaining, -d.reset_after_us))
