"""The circuit-breaker state machine as pure functions over a flat ``dict[str, int]``.

No I/O, no clock, stdlib only (runs on CPython and inside Pyodide): callers pass
``now_ms``. The origin's local breaker (:mod:`edge_kv.origin.resilience.breaker`) keeps
the dict in memory; the Redis-shared breaker keeps the *same fields* in one Redis hash
and runs ``edge_kv/origin/resilience/breaker.lua``, which mirrors this module line for
line (a property test runs random operation sequences through both and compares results
and stored fields).

State fields (absent = 0):

* ``st`` state (0 CLOSED, 1 OPEN, 2 HALF_OPEN), ``gen`` generation (bumped on every
  transition), ``since`` ms timestamp of the last transition;
* HALF_OPEN: ``pa`` probes admitted, ``pc``/``pf``/``ps`` probe outcomes, failures, slow;
* count window: ``n``/``f``/``s`` calls, failures, slow calls in the window, ``h`` ring
  head, ``r<i>`` ring slot codes (0 empty, else ``1 + failed + 2 * slow``);
* time window: per-second buckets ``be<i>`` (epoch second), ``bc<i>``/``bf<i>``/``bs<i>``.

Every permission carries the generation it was granted in; an outcome recorded with
an older generation is ignored, so late answers from before a transition never count
toward the next window or probe round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from edge_kv.core.errors import InvalidInput

__all__ = [
    "CLOSED",
    "FAILURE",
    "HALF_OPEN",
    "IGNORED",
    "OPEN",
    "STATE_NAMES",
    "SUCCESS",
    "BreakerConfig",
    "BreakerDecision",
    "State",
    "acquire",
    "force",
    "record",
    "record_closed_count",
    "transition",
]

CLOSED, OPEN, HALF_OPEN = 0, 1, 2
STATE_NAMES = ("closed", "open", "half_open")

SUCCESS, FAILURE, IGNORED = 0, 1, 2

State = dict[str, int]


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Thresholds of one breaker. Rates are percentages in (0, 100]; times in seconds.

    * ``window`` ``"count"``: the last ``window_size`` calls; ``"time"``: the calls of the
      last ``window_size`` seconds (one-second buckets).
    * The breaker opens when at least ``minimum_calls`` calls are in the window and the
      failure rate >= ``failure_rate_threshold`` or the slow-call rate >=
      ``slow_call_rate_threshold`` (a call is slow when it takes >= ``slow_call_duration``;
      ``None`` disables slow-call tracking).
    * OPEN lasts ``wait_in_open``; then HALF_OPEN admits ``half_open_probes`` calls and
      decides on their outcomes with the same thresholds (OPEN again or CLOSED).
      If the probes do not all report within ``half_open_timeout`` (default
      ``wait_in_open``; e.g. a replica died mid-probe) a fresh probe round starts.
    """

    window: Literal["count", "time"] = "count"
    window_size: int = 100
    minimum_calls: int = 10
    failure_rate_threshold: float = 50.0
    slow_call_duration: float | None = None
    slow_call_rate_threshold: float = 100.0
    wait_in_open: float = 30.0
    half_open_probes: int = 3
    half_open_timeout: float | None = None
    slow_ms: int = field(init=False)
    wait_ms: int = field(init=False)
    half_open_ms: int = field(init=False)
    slot_keys: tuple[tuple[str, ...], ...] = field(init=False, repr=False, compare=False)
    min_calls: int = field(init=False, repr=False, compare=False)
    lua_argv: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.window not in ("count", "time"):
            raise InvalidInput(f"window must be 'count' or 'time', got {self.window!r}")
        for name in ("window_size", "minimum_calls", "half_open_probes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"{name} must be an integer >= 1, got {value!r}")
        if self.window == "time" and self.window_size > 3600:
            raise InvalidInput("a time window is at most 3600 seconds")
        if self.window == "count" and self.window_size > 10_000:
            raise InvalidInput("a count window is at most 10000 calls")
        for name in ("failure_rate_threshold", "slow_call_rate_threshold"):
            rate = getattr(self, name)
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 100:
                raise InvalidInput(f"{name} must be a percentage in (0, 100], got {rate!r}")
        object.__setattr__(
            self,
            "slow_ms",
            0 if self.slow_call_duration is None else _ms("slow_call_duration", self.slow_call_duration),
        )
        object.__setattr__(self, "wait_ms", _ms("wait_in_open", self.wait_in_open))
        timeout = self.wait_in_open if self.half_open_timeout is None else self.half_open_timeout
        object.__setattr__(self, "half_open_ms", _ms("half_open_timeout", timeout))
        # Precomputed hash-field names: ("r<i>",) per ring slot or ("be<i>", "bc<i>", "bf<i>", "bs<i>").
        prefixes = ("r",) if self.window == "count" else ("be", "bc", "bf", "bs")
        keys = tuple(tuple(p + str(i) for p in prefixes) for i in range(self.window_size))
        object.__setattr__(self, "slot_keys", keys)
        object.__setattr__(self, "min_calls", self.effective_minimum)
        object.__setattr__(self, "lua_argv", self._build_lua_args())

    @property
    def effective_minimum(self) -> int:
        """A count window can never hold more than ``window_size`` calls."""
        return min(self.minimum_calls, self.window_size) if self.window == "count" else self.minimum_calls

    def lua_args(self) -> list[str]:
        """The configuration as the ARGV tail of ``breaker.lua`` (order matters)."""
        return list(self.lua_argv)

    def _build_lua_args(self) -> tuple[str, ...]:
        return (
            "1" if self.window == "count" else "2",
            str(self.window_size),
            str(self.effective_minimum),
            repr(float(self.failure_rate_threshold)),
            str(self.slow_ms),
            repr(float(self.slow_call_rate_threshold)),
            str(self.wait_ms),
            str(self.half_open_probes),
            str(self.half_open_ms),
        )


def _ms(name: str, seconds: object) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < 10**7:
        raise InvalidInput(f"{name} must be a number of seconds > 0, got {seconds!r}")
    return max(1, round(seconds * 1000))


class BreakerDecision(NamedTuple):
    """Answer of :func:`acquire` / :func:`record`.

    ``changed`` is the previous state when this operation made a transition, else -1.
    ``retry_after_ms`` is set on refusals. ``shared`` tells which store produced it.
    """

    allowed: bool
    gen: int
    state: int
    retry_after_ms: int
    changed: int
    shared: bool = False


def transition(st: State, new: int, now_ms: int) -> None:
    """Enter ``new``: bump the generation, forget the window and any probe round."""
    gen = st.get("gen", 0) + 1
    st.clear()
    st["st"] = new
    st["gen"] = gen
    st["since"] = now_ms


def _tripped(cfg: BreakerConfig, calls: int, fails: int, slows: int) -> bool:
    if calls <= 0:
        return False
    if fails * 100 >= cfg.failure_rate_threshold * calls:
        return True
    return cfg.slow_ms > 0 and slows * 100 >= cfg.slow_call_rate_threshold * calls


def acquire(cfg: BreakerConfig, st: State, now_ms: int) -> BreakerDecision:
    """May a call go through now? Moves OPEN -> HALF_OPEN once ``wait_in_open`` is over."""
    state = st.get("st", CLOSED)
    changed = -1
    if state == OPEN:
        since = st.get("since", 0)
        if now_ms - since < cfg.wait_ms:
            return BreakerDecision(False, st.get("gen", 0), OPEN, since + cfg.wait_ms - now_ms, -1)
        transition(st, HALF_OPEN, now_ms)
        state = HALF_OPEN
        changed = OPEN
    if state == HALF_OPEN:
        since = st.get("since", 0)
        if st.get("pa", 0) >= cfg.half_open_probes and now_ms - since >= cfg.half_open_ms:
            transition(st, HALF_OPEN, now_ms)  # probes lost: start a fresh round
            since = now_ms
        pa = st.get("pa", 0)
        if pa < cfg.half_open_probes:
            st["pa"] = pa + 1
            return BreakerDecision(True, st["gen"], HALF_OPEN, 0, changed)
        return BreakerDecision(
            False, st.get("gen", 0), HALF_OPEN, max(1, since + cfg.half_open_ms - now_ms), changed
        )
    return BreakerDecision(True, st.get("gen", 0), CLOSED, 0, -1)


def record(
    cfg: BreakerConfig, st: State, now_ms: int, gen: int, kind: int, duration_ms: int
) -> BreakerDecision:
    """Report the outcome of a call admitted in generation ``gen``."""
    state = st.get("st", CLOSED)
    cur = st.get("gen", 0)
    if gen != cur:
        return BreakerDecision(False, cur, state, 0, -1)
    if kind == IGNORED:
        if state == HALF_OPEN and st.get("pa", 0) > 0:
            st["pa"] = st["pa"] - 1
        return BreakerDecision(False, cur, state, 0, -1)
    fail = 1 if kind == FAILURE else 0
    slow = 1 if cfg.slow_ms > 0 and duration_ms >= cfg.slow_ms else 0
    if state == HALF_OPEN:
        pc = st.get("pc", 0) + 1
        pf = st.get("pf", 0) + fail
        ps = st.get("ps", 0) + slow
        st["pc"] = pc
        st["pf"] = pf
        st["ps"] = ps
        if pc >= cfg.half_open_probes:
            new = OPEN if _tripped(cfg, pc, pf, ps) else CLOSED
            transition(st, new, now_ms)
            return BreakerDecision(False, st["gen"], new, 0, HALF_OPEN)
        return BreakerDecision(False, cur, state, 0, -1)
    if state != CLOSED:
        return BreakerDecision(False, cur, state, 0, -1)
    size = cfg.window_size
    if cfg.window == "count":
        get = st.get
        h = get("h", 0)
        (slot,) = cfg.slot_keys[h]
        old = get(slot, 0)
        calls = get("n", 0) + 1
        fails = get("f", 0) + fail
        slows = get("s", 0) + slow
        if old > 0:
            calls -= 1
            fails -= (old - 1) % 2
            slows -= (old - 1) // 2
        st[slot] = 1 + fail + 2 * slow
        h += 1
        st["h"] = 0 if h == size else h
        st["n"] = calls
        st["f"] = fails
        st["s"] = slows
    else:
        sec = now_ms // 1000
        be_i, bc_i, bf_i, bs_i = cfg.slot_keys[sec % size]
        if st.get(be_i, 0) != sec:
            st[be_i] = sec
            st[bc_i] = 0
            st[bf_i] = 0
            st[bs_i] = 0
        st[bc_i] = st[bc_i] + 1
        st[bf_i] = st[bf_i] + fail
        st[bs_i] = st[bs_i] + slow
        calls = fails = slows = 0
        for be_j, bc_j, bf_j, bs_j in cfg.slot_keys:
            be = st.get(be_j, 0)
            if sec - size < be <= sec:
                calls += st.get(bc_j, 0)
                fails += st.get(bf_j, 0)
                slows += st.get(bs_j, 0)
    if calls >= cfg.effective_minimum and _tripped(cfg, calls, fails, slows):
        transition(st, OPEN, now_ms)
        return BreakerDecision(False, st["gen"], OPEN, 0, CLOSED)
    return BreakerDecision(False, cur, CLOSED, 0, -1)


def record_closed_count(cfg: BreakerConfig, st: State, gen: int, fail: int, slow: int) -> bool:
    """Fast path of :func:`record` for its common case: a count window, CLOSED, an outcome
    (``fail``/``slow`` 0 or 1, i.e. SUCCESS or FAILURE, slow already decided against
    ``cfg.slow_ms``) of a call admitted in the current generation, that does not trip.

    Returns True when it recorded the outcome, with exactly the state changes
    :func:`record` makes (whose answer would be ``BreakerDecision(False, gen, CLOSED, 0,
    -1)``). Returns False, changing nothing, in every other case: the caller then calls
    :func:`record`, which decides (and transitions) as usual.
    """
    get = st.get
    if get("st", CLOSED) != CLOSED or get("gen", 0) != gen or cfg.window != "count":
        return False
    h = get("h", 0)
    (slot,) = cfg.slot_keys[h]
    old = get(slot, 0)
    calls = get("n", 0) + 1
    fails = get("f", 0) + fail
    slows = get("s", 0) + slow
    if old > 0:
        calls -= 1
        fails -= (old - 1) % 2
        slows -= (old - 1) // 2
    if calls >= cfg.min_calls and _tripped(cfg, calls, fails, slows):
        return False
    st[slot] = 1 + fail + 2 * slow
    h += 1
    st["h"] = 0 if h == cfg.window_size else h
    st["n"] = calls
    st["f"] = fails
    st["s"] = slows
    return True


def force(st: State, new: int, now_ms: int) -> BreakerDecision:
    """Operator override: jump to ``new`` (e.g. OPEN during maintenance, CLOSED to reset)."""
    old = st.get("st", CLOSED)
    transition(st, new, now_ms)
    return BreakerDecision(new == CLOSED, st["gen"], new, 0, old)
