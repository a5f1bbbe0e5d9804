"""Retry budget: retries may not exceed a fraction of the traffic.

The classic deposit/withdraw ratio bucket (as in Finagle and gRPC retry throttling):
every first attempt deposits ``DEPOSIT`` units, every retry withdraws
``DEPOSIT / ratio`` units, the balance is capped, and a new budget starts with
``initial_retries`` retries in it. So over any run, ``retries <= ratio * requests +
initial_retries`` (+ the optional floor below). Integer units, no float drift.

``min_retries_per_second`` is a floor for low traffic (a service handling one request
a minute should still be allowed to retry); it is a core
:class:`edge_kv.core.ratelimit.TokenBucket`, consulted only when the ratio bucket is
empty, so the cap becomes ``ratio * requests + initial_retries + floor * seconds``.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_kv.core.clock import SYSTEM_CLOCK, Clock
from edge_kv.core.ratelimit import TokenBucket

DEPOSIT = 1000


@dataclass
class BudgetMetrics:
    deposits: int = 0
    withdrawals: int = 0
    refused: int = 0


class RetryBudget:
    """Process-local retry budget shared by every :class:`~.retry.RetryPolicy` given it."""

    def __init__(
        self,
        ratio: float = 0.1,
        *,
        initial_retries: int = 10,
        max_retries_banked: int = 100,
        min_retries_per_second: float = 0.0,
        clock: Clock | None = None,
    ) -> None:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
        if initial_retries < 0 or max_retries_banked < 1 or initial_retries > max_retries_banked:
            raise ValueError("need 0 <= initial_retries <= max_retries_banked and max_retries_banked >= 1")
        if min_retries_per_second < 0:
            raise ValueError("min_retries_per_second must be >= 0")
        self.ratio = float(ratio)
        self.withdraw_units = max(1, round(DEPOSIT / self.ratio))
        self.max_balance = max_retries_banked * self.withdraw_units
        self.balance = initial_retries * self.withdraw_units
        self.clock = clock or SYSTEM_CLOCK
        self.metrics = BudgetMetrics()
        self._floor = (
            TokenBucket(capacity=max(1, round(min_retries_per_second)), refill_rate=min_retries_per_second)
            if min_retries_per_second > 0
            else None
        )
        self._floor_tat = 0

    def deposit(self) -> None:
        """Called once per logical request (its first attempt)."""
        self.metrics.deposits += 1
        self.balance = min(self.max_balance, self.balance + DEPOSIT)

    def try_withdraw(self) -> bool:
        """Called before each retry; False means the retry must not happen."""
        if self.balance >= self.withdraw_units:
            self.balance -= self.withdraw_units
            self.metrics.withdrawals += 1
            return True
        if self._floor is not None:
            now_us = int(self.clock.monotonic() * 1_000_000)
            decision, self._floor_tat = self._floor.decide(self._floor_tat, now_us, 1)
            if decision.allowed:
                self.metrics.withdrawals += 1
                return True
        self.metrics.refused += 1
        return False

    @property
    def available(self) -> int:
        """Whole retries currently in the ratio bucket."""
        return self.balance // self.withdraw_units
