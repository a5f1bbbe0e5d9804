"""Rate-limit algorithms as pure state transitions.

Each policy has ``decide(state, now_us, cost) -> (Decision, new_state)``. A refused
request never changes state (``new_state`` is the state given). Backends persist
``new_state`` atomically: Redis in one Lua script that mirrors this file line for line,
a Durable Object inside one storage transaction.

Exactness contract for mirrors: every quantity is an integer below 2**53, so Lua's
doubles hold them exactly. Integer floor division in Lua must be written as
``math.floor(a / b)`` followed by a one-step correction (see ``floor_div`` in the Lua
sources); policies refuse parameters whose products could leave that range.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_kv.core.decision import US_PER_SECOND, Decision, most_restrictive
from edge_kv.core.errors import InvalidInput
from edge_kv.core.validate import check_cost, check_positive_int, check_positive_number

MAX_EXACT = 2**53
US_PER_MS = 1_000


def _seconds_to_us(name: str, seconds: float) -> int:
    check_positive_number(name, seconds)
    us = round(seconds * US_PER_SECOND)
    if us < 1:
        raise InvalidInput(f"{name} must be at least one microsecond, got {seconds}")
    return us


@dataclass(frozen=True, slots=True)
class TokenBucket:
    """Token bucket holding ``capacity`` tokens, refilled at ``refill_rate`` tokens/s.

    Implemented as GCRA: the state is one integer, the theoretical arrival time (TAT)
    in microseconds, which is exactly equivalent to a continuously refilled bucket and
    needs no floating point. One token is earned every ``interval_us`` microseconds
    (``round(1e6 / refill_rate)``).
    """

    capacity: int
    refill_rate: float
    name: str = "default"
    interval_us: int = field(init=False)

    def __post_init__(self) -> None:
        check_positive_int("capacity", self.capacity)
        check_positive_number("refill_rate", self.refill_rate)
        if self.refill_rate > US_PER_SECOND:
            raise InvalidInput(f"refill_rate must be <= {US_PER_SECOND} tokens/s, got {self.refill_rate}")
        interval = round(US_PER_SECOND / self.refill_rate)
        if self.capacity * interval >= MAX_EXACT // 4:
            raise InvalidInput("capacity / refill_rate is too large (bucket would take centuries to fill)")
        object.__setattr__(self, "interval_us", interval)

    @property
    def limit(self) -> int:
        return self.capacity

    @property
    def window_us(self) -> int:
        """Time for an empty bucket to refill completely (the ``w`` of ``RateLimit-Policy``)."""
        return self.capacity * self.interval_us

    def decide(self, tat_us: int, now_us: int, cost: int = 1) -> tuple[Decision, int]:
        """``tat_us`` is the stored TAT, 0 for a new key. Returns the decision and new TAT."""
        check_cost(cost, self.capacity)
        t = self.interval_us
        burst = self.capacity * t
        tat = tat_us if tat_us > now_us else now_us
        new_tat = tat + cost * t
        if new_tat - now_us > burst:
            return (
                Decision(
                    allowed=False,
                    limit=self.capacity,
                    remaining=(burst - (tat - now_us)) // t,
                    retry_after_us=new_tat - now_us - burst,
                    reset_after_us=tat - now_us,
                    policy=self.name,
                ),
                tat_us,
            )
        return (
            Decision(
                allowed=True,
                limit=self.capacity,
                remaining=(burst - (new_tat - now_us)) // t,
                retry_after_us=0,
                reset_after_us=new_tat - now_us,
                policy=self.name,
            ),
            new_tat,
        )


@dataclass(frozen=True, slots=True)
class SlidingLog:
    """Exact sliding window: at most ``limit`` units in any ``window_s`` interval.

    State is the sorted list of admission timestamps (one entry per unit of cost).
    Memory grows with ``limit``; prefer :class:`SlidingWindowCounter` for large limits.
    """

    limit: int
    window_s: float
    name: str = "default"
    window_us: int = field(init=False)

    def __post_init__(self) -> None:
        check_positive_int("limit", self.limit)
        object.__setattr__(self, "window_us", _seconds_to_us("window_s", self.window_s))

    def decide(self, entries: list[int], now_us: int, cost: int = 1) -> tuple[Decision, list[int]]:
        """``entries`` are admission times in ascending order; older ones are pruned."""
        check_cost(cost, self.limit)
        w = self.window_us
        live = [t for t in entries if t > now_us - w]
        count = len(live)
        if count + cost <= self.limit:
            new = live + [now_us] * cost
            if live and live[-1] > now_us:
                # The clock stepped back: keep the log sorted (a Redis sorted set is).
                new.sort()
            return (
                Decision(
                    allowed=True,
                    limit=self.limit,
                    remaining=self.limit - count - cost,
                    retry_after_us=0,
                    reset_after_us=(new[-1] + w - now_us) if new else 0,
                    policy=self.name,
                ),
                new,
            )
        k = count + cost - self.limit
        return (
            Decision(
                allowed=False,
                limit=self.limit,
                remaining=self.limit - count,
                retry_after_us=live[k - 1] + w - now_us,
                reset_after_us=live[-1] + w - now_us,
                policy=self.name,
            ),
            entries,
        )


@dataclass(frozen=True, slots=True)
class CounterState:
    """Sliding-counter state: index of the current window and two counts."""

    window: int = 0
    previous: int = 0
    current: int = 0


@dataclass(frozen=True, slots=True)
class SlidingWindowCounter:
    """Approximate sliding window from two fixed-window counters (Cloudflare's method).

    The previous window's count is weighted by how much of it still overlaps the
    sliding window. Arithmetic is in whole milliseconds and scaled by the window
    length so it stays integral: admit when
    ``previous * (W - elapsed) + current * W + cost * W <= limit * W``.
    Over-admission versus the exact log is bounded by the assumption that the previous
    window's requests were evenly spread.
    """

    limit: int
    window_s: float
    name: str = "default"
    window_ms: int = field(init=False)

    def __post_init__(self) -> None:
        check_positive_int("limit", self.limit)
        check_positive_number("window_s", self.window_s)
        ms = round(self.window_s * 1000)
        if ms < 1:
            raise InvalidInput(f"window_s must be at least 1 ms, got {self.window_s}")
        if 2 * self.limit * ms >= MAX_EXACT:
            raise InvalidInput("limit * window is too large for exact arithmetic")
        object.__setattr__(self, "window_ms", ms)

    @property
    def window_us(self) -> int:
        return self.window_ms * US_PER_MS

    def decide(self, state: CounterState, now_us: int, cost: int = 1) -> tuple[Decision, CounterState]:
        check_cost(cost, self.limit)
        w = self.window_ms
        now = now_us // US_PER_MS
        idx = now // w
        elapsed = now - idx * w
        if state.window == idx:
            prev, curr = state.previous, state.current
        elif state.window == idx - 1:
            prev, curr = state.current, 0
        else:
            prev, curr = 0, 0
        weighted = prev * (w - elapsed) + curr * w
        if weighted + cost * w <= self.limit * w:
            curr += cost
            new_state = CounterState(idx, prev, curr)
            return (
                Decision(
                    allowed=True,
                    limit=self.limit,
                    remaining=(self.limit * w - weighted - cost * w) // w,
                    retry_after_us=0,
                    reset_after_us=self._reset_ms(idx, prev, curr, now) * US_PER_MS,
                    policy=self.name,
                ),
                new_state,
            )
        room = self.limit - curr - cost
        if room >= 0 and prev > 0:
            # Wait inside this window until the previous window's weight has decayed.
            at = idx * w + w - (room * w) // prev
        else:
            # Wait for the next window, where the current count becomes the previous one.
            at = (idx + 1) * w + (w - ((self.limit - cost) * w) // curr if curr > 0 else 0)
        return (
            Decision(
                allowed=False,
                limit=self.limit,
                remaining=max(0, (self.limit * w - weighted) // w),
                retry_after_us=(at - now) * US_PER_MS,
                reset_after_us=self._reset_ms(idx, prev, curr, now) * US_PER_MS,
                policy=self.name,
            ),
            state,
        )

    def _reset_ms(self, idx: int, prev: int, curr: int, now: int) -> int:
        w = self.window_ms
        if curr > 0:
            return (idx + 2) * w - now
        if prev > 0:
            return (idx + 1) * w - now
        return 0


@dataclass(frozen=True, slots=True)
class WindowState:
    """Fixed-window state: index of the window and units admitted in it."""

    window: int = 0
    count: int = 0


@dataclass(frozen=True, slots=True)
class FixedWindow:
    """At most ``limit`` units per aligned window of ``window_s`` seconds.

    Cheapest and simplest; admits up to ``2 * limit`` around a window boundary.
    """

    limit: int
    window_s: float
    name: str = "default"
    window_us: int = field(init=False)

    def __post_init__(self) -> None:
        check_positive_int("limit", self.limit)
        object.__setattr__(self, "window_us", _seconds_to_us("window_s", self.window_s))

    def decide(self, state: WindowState, now_us: int, cost: int = 1) -> tuple[Decision, WindowState]:
        check_cost(cost, self.limit)
        w = self.window_us
        idx = now_us // w
        count = state.count if state.window == idx else 0
        end = (idx + 1) * w - now_us
        if count + cost <= self.limit:
            count += cost
            return (
                Decision(True, self.limit, self.limit - count, 0, end if count else 0, self.name),
                WindowState(idx, count),
            )
        return (
            Decision(False, self.limit, self.limit - count, end, end, self.name),
            state,
        )


Policy = TokenBucket | SlidingLog | SlidingWindowCounter | FixedWindow


def decide_tiers(
    tiers: list[tuple[Policy, object]], now_us: int, cost: int = 1
) -> tuple[Decision, list[Decision], list[object]]:
    """All-or-nothing over several limits on one key (e.g. 10/s and 1000/h).

    Returns the combined decision, each tier's decision, and the states to persist:
    the new states when every tier admits, the given states otherwise.
    """
    if not tiers:
        raise InvalidInput("at least one tier is required")
    decisions: list[Decision] = []
    new_states: list[object] = []
    for policy, state in tiers:
        decision, new_state = policy.decide(state, now_us, cost)  # type: ignore[arg-type]
        decisions.append(decision)
        new_states.append(new_state)
    combined = most_restrictive(decisions)
    if not combined.allowed:
        new_states = [state for _, state in tiers]
    return combined, decisions, new_states
