"""Circuit breaker for asyncio code: decorator, ``call`` and an async context manager.

The state machine lives in :mod:`edge_kv.core.breaker`; this module measures calls,
classifies outcomes, raises :class:`~.errors.CircuitOpenError`, runs fallbacks and
tells listeners about state changes. Where the state is kept is a :class:`BreakerStore`:
:class:`LocalBreakerStore` (this process, the default) or
:class:`~.breaker_redis.RedisBreakerStore` (every replica shares one state).

Listeners fire for transitions this instance makes *and* for ones it observes
(with a shared store another replica may have opened the circuit).

:func:`circuit_breaker` is the quick-start spelling:
``@circuit_breaker(failure_threshold=5, recovery_timeout=30)``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ParamSpec, Protocol, TypeVar, cast

from edge_kv.core import breaker as policy
from edge_kv.core.breaker import (
    CLOSED,
    FAILURE,
    HALF_OPEN,
    IGNORED,
    OPEN,
    STATE_NAMES,
    SUCCESS,
    BreakerConfig,
    BreakerDecision,
)
from edge_kv.core.clock import SYSTEM_CLOCK, Clock, SystemClock
from edge_kv.core.validate import check_key
from edge_kv.origin.resilience.errors import CircuitOpenError, ResilienceError

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "BreakerConfig",
    "BreakerDecision",
    "BreakerGuard",
    "BreakerMetrics",
    "BreakerProtected",
    "BreakerStore",
    "CircuitBreaker",
    "LocalBreakerStore",
    "StateListener",
    "circuit_breaker",
]

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
StateListener = Callable[[str, str, str], None]
_MISSING: Any = object()


class BreakerStore(Protocol):
    """Where breaker state lives. Each method is one atomic step of the policy."""

    async def acquire(self, name: str, cfg: BreakerConfig) -> BreakerDecision: ...

    async def record(
        self, name: str, cfg: BreakerConfig, permit: BreakerDecision, kind: int, duration_ms: int
    ) -> BreakerDecision: ...

    async def force(self, name: str, cfg: BreakerConfig, state: int) -> BreakerDecision: ...


class LocalBreakerStore:
    """In-process state (one dict per breaker name); time from ``clock.monotonic``."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SYSTEM_CLOCK
        self.states: dict[str, policy.State] = {}

    def _now(self) -> int:
        return int(self.clock.monotonic() * 1000)

    def _st(self, name: str) -> policy.State:
        st = self.states.get(name)
        if st is None:
            st = self.states[name] = {}
        return st

    async def acquire(self, name: str, cfg: BreakerConfig) -> BreakerDecision:
        return policy.acquire(cfg, self._st(name), self._now())

    async def record(
        self, name: str, cfg: BreakerConfig, permit: BreakerDecision, kind: int, duration_ms: int
    ) -> BreakerDecision:
        return policy.record(cfg, self._st(name), self._now(), permit.gen, kind, duration_ms)

    async def force(self, name: str, cfg: BreakerConfig, state: int) -> BreakerDecision:
        return policy.force(self._st(name), state, self._now())


@dataclass
class BreakerMetrics:
    """Counters since creation. ``transitions[("closed", "open")]`` counts state changes."""

    permitted: int = 0
    rejected: int = 0
    successes: int = 0
    failures: int = 0
    ignored: int = 0
    slow: int = 0
    fallbacks: int = 0
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)


class CircuitBreaker:
    """Stops calling a failing dependency; see :class:`BreakerConfig` for the thresholds.

    Outcome classification: an exception that is an instance of ``ignore_exceptions``
    (default: our own :class:`ResilienceError`, i.e. local refusals) is neither success
    nor failure; else ``is_failure(exc)`` decides when given; else instances of
    ``failure_exceptions`` (default ``Exception``) are failures. ``BaseException``s such
    as cancellation are ignored (the probe slot is given back). A returned value is a
    failure when ``is_failure_result(value)`` says so (e.g. an HTTP 503 response).
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        store: BreakerStore | None = None,
        clock: Clock | None = None,
        failure_exceptions: tuple[type[BaseException], ...] = (Exception,),
        ignore_exceptions: tuple[type[BaseException], ...] = (ResilienceError,),
        is_failure: Callable[[BaseException], bool] | None = None,
        is_failure_result: Callable[[Any], bool] | None = None,
        on_state_change: StateListener | Iterable[StateListener] | None = None,
    ) -> None:
        self.name = check_key(name)
        self.config = config or BreakerConfig()
        self.clock = clock or SYSTEM_CLOCK
        self.store: BreakerStore = store if store is not None else LocalBreakerStore(self.clock)
        self.failure_exceptions = failure_exceptions
        self.ignore_exceptions = ignore_exceptions
        self.is_failure = is_failure
        self.is_failure_result = is_failure_result
        self.metrics = BreakerMetrics()
        self._listeners: list[StateListener] = []
        if callable(on_state_change):
            self._listeners.append(on_state_change)
        elif on_state_change is not None:
            self._listeners.extend(on_state_change)
        self._last = CLOSED
        # Fast path: a local store is driven synchronously (no awaits, no store lookups).
        self._local: policy.State | None = None
        self._store_mono: Callable[[], float] = self.clock.monotonic
        if type(self.store) is LocalBreakerStore:
            self._local = self.store._st(self.name)
            self._store_mono = _fast_monotonic(self.store.clock)
        self._mono = _fast_monotonic(self.clock)
        # Faster still for the common case of `call` (see _call_fast): local store and a
        # count window. Same decisions, state and metrics as the general path.
        self._fast: policy.State | None = self._local if self.config.window == "count" else None

    # -- state -------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """The last state this instance saw (``closed``/``open``/``half_open``)."""
        return STATE_NAMES[self._last]

    def add_listener(self, listener: StateListener) -> None:
        """``listener(breaker_name, old_state, new_state)``; exceptions are logged, not raised."""
        self._listeners.append(listener)

    def _observe(self, v: BreakerDecision) -> None:
        if v.changed >= 0:
            self._fire(v.changed, v.state)
        elif v.state != self._last:
            self._fire(self._last, v.state)
        self._last = v.state

    def _fire(self, old: int, new: int) -> None:
        pair = (STATE_NAMES[old], STATE_NAMES[new])
        self.metrics.transitions[pair] += 1
        for listener in self._listeners:
            try:
                listener(self.name, *pair)
            except Exception:
                log.exception("circuit %r state listener failed", self.name)

    async def force_open(self) -> None:
        """Open now (maintenance); it half-opens after ``wait_in_open`` as usual."""
        self._observe(await self.store.force(self.name, self.config, OPEN))

    async def reset(self) -> None:
        """Close now and forget the window."""
        self._observe(await self.store.force(self.name, self.config, CLOSED))

    # -- calls -------------------------------------------------------------------------
    def classify(self, exc: BaseException) -> int:
        """SUCCESS, FAILURE or IGNORED for an exception raised by the protected call."""
        if isinstance(exc, self.ignore_exceptions):
            return IGNORED
        if not isinstance(exc, Exception):
            return IGNORED
        if self.is_failure is not None:
            return FAILURE if self.is_failure(exc) else SUCCESS
        return FAILURE if isinstance(exc, self.failure_exceptions) else SUCCESS

    async def permit(self) -> BreakerDecision:
        """Ask for permission; raises :class:`CircuitOpenError` when refused."""
        if self._local is not None:
            v = policy.acquire(self.config, self._local, int(self._store_mono() * 1000))
        else:
            v = await self.store.acquire(self.name, self.config)
        return self._admit(v)

    def _admit(self, v: BreakerDecision) -> BreakerDecision:
        if v.changed >= 0 or v.state != self._last:
            self._observe(v)
        if not v.allowed:
            self.metrics.rejected += 1
            raise CircuitOpenError(self.name, STATE_NAMES[v.state], v.retry_after_ms / 1000)
        self.metrics.permitted += 1
        return v

    async def report(self, permit: BreakerDecision, kind: int, duration: float) -> None:
        """Record the outcome of a permitted call that took ``duration`` seconds."""
        duration_ms = self._count(kind, duration)
        if self._local is not None:
            v = policy.record(
                self.config, self._local, int(self._store_mono() * 1000), permit.gen, kind, duration_ms
            )
        else:
            v = await self.store.record(self.name, self.config, permit, kind, duration_ms)
        if v.changed >= 0 or v.state != self._last:
            self._observe(v)

    def _count(self, kind: int, duration: float) -> int:
        duration_ms = max(0, int(duration * 1000))
        m = self.metrics
        if kind == SUCCESS:
            m.successes += 1
        elif kind == FAILURE:
            m.failures += 1
        else:
            m.ignored += 1
        slow_ms = self.config.slow_ms
        if kind != IGNORED and slow_ms > 0 and duration_ms >= slow_ms:
            m.slow += 1
        return duration_ms

    def guard(self) -> BreakerGuard:
        """``async with breaker.guard() as g:`` — call ``g.mark_failure()`` for bad results."""
        return BreakerGuard(self)

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``await fn(*args, **kwargs)`` through the breaker."""
        st = self._fast
        if st is not None and self._last == CLOSED and st.get("st", CLOSED) == CLOSED:
            # Fast path: CLOSED, local store, count window. Permission in CLOSED changes
            # nothing and needs no clock (policy.acquire would answer
            # BreakerDecision(True, gen, CLOSED, 0, -1)), so it is inlined; the duration
            # is measured only when slow calls are tracked (it is used for nothing else);
            # the outcome goes through _fast_outcome. Everything else takes the general
            # path below. test_resilience_breaker_fast_path.py checks both agree.
            gen = st.get("gen", 0)
            self.metrics.permitted += 1
            timed = self.config.slow_ms > 0
            start = self._mono() if timed else 0.0
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                kind = self.classify(exc)
                duration = self._mono() - start if timed else 0.0
                if not self._fast_outcome(st, gen, kind, duration):
                    await self.report(BreakerDecision(True, gen, CLOSED, 0, -1), kind, duration)
                raise
            kind = SUCCESS
            if self.is_failure_result is not None and self.is_failure_result(result):
                kind = FAILURE
            duration = self._mono() - start if timed else 0.0
            if not self._fast_outcome(st, gen, kind, duration):
                await self.report(BreakerDecision(True, gen, CLOSED, 0, -1), kind, duration)
            return result
        permit = await self.permit()
        start = self._mono()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            await self.report(permit, self.classify(exc), self._mono() - start)
            raise
        failed = self.is_failure_result is not None and self.is_failure_result(result)
        await self.report(permit, FAILURE if failed else SUCCESS, self._mono() - start)
        return result

    def _fast_outcome(self, st: policy.State, gen: int, kind: int, duration: float) -> bool:
        """Record a fast-path outcome with :func:`policy.record_closed_count` (metrics as
        :meth:`_count` counts them) when it applies; False: nothing done, use :meth:`report`."""
        if kind == IGNORED or self._last != CLOSED:
            return False
        slow_ms = self.config.slow_ms
        slow = 1 if slow_ms > 0 and max(0, int(duration * 1000)) >= slow_ms else 0
        if not policy.record_closed_count(self.config, st, gen, kind, slow):  # kind: 0 or 1
            return False
        m = self.metrics
        if kind == SUCCESS:
            m.successes += 1
        else:
            m.failures += 1
        if slow:
            m.slow += 1
        return True

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Decorator form of :meth:`call`."""

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.call(fn, *args, **kwargs)

        return wrapper

    def protect(
        self,
        *,
        fallback: Callable[..., Awaitable[Any]] | None = None,
        default: Any = _MISSING,
        use_cached: bool = False,
        cache_size: int = 1024,
        on: tuple[type[BaseException], ...] = (CircuitOpenError,),
    ) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
        """Decorator with fallbacks, tried in order when the call raises one of ``on``
        (default: only when the circuit is open):

        1. ``use_cached``: the last successful result for the same arguments;
        2. ``fallback``: an alternate coroutine function called with the same arguments;
        3. ``default``: a constant.

        If none applies the original exception propagates.
        """

        def deco(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
            cache: OrderedDict[Hashable, Any] = OrderedDict()

            @functools.wraps(fn)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                key = _cache_key(args, kwargs) if use_cached else None
                try:
                    result = await self.call(fn, *args, **kwargs)
                except on:
                    self.metrics.fallbacks += 1
                    if key is not None and key in cache:
                        return cast(T, cache[key])
                    if fallback is not None:
                        return cast(T, await fallback(*args, **kwargs))
                    if default is not _MISSING:
                        return cast(T, default)
                    raise
                if key is not None:
                    cache[key] = result
                    cache.move_to_end(key)
                    if len(cache) > cache_size:
                        cache.popitem(last=False)
                return result

            return wrapper

        return deco


def _fast_monotonic(clock: Clock) -> Callable[[], float]:
    """``time.monotonic`` itself for the system clock (saves a call layer per use)."""
    return time.monotonic if isinstance(clock, SystemClock) else clock.monotonic


def _cache_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable | None:
    key = (args, tuple(sorted(kwargs.items())))
    try:
        hash(key)
    except TypeError:
        return None
    return key


class BreakerGuard:
    """One guarded call: permission on enter, outcome and duration recorded on exit."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self._permit: BreakerDecision | None = None
        self._start = 0.0
        self._failed = False

    def mark_failure(self) -> None:
        """Count this call as a failure even though it raised nothing."""
        self._failed = True

    async def __aenter__(self) -> BreakerGuard:
        self._permit = await self.breaker.permit()
        self._start = self.breaker._mono()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._permit is not None
        duration = self.breaker._mono() - self._start
        kind = (FAILURE if self._failed else SUCCESS) if ev is None else self.breaker.classify(ev)
        await self.breaker.report(self._permit, kind, duration)


class BreakerProtected(Protocol[P, T_co]):
    """A coroutine function wrapped by :func:`circuit_breaker`; ``.breaker`` is its
    :class:`CircuitBreaker` (``state``, ``metrics``, ``reset()``, ``force_open()``)."""

    breaker: CircuitBreaker

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[T_co]: ...


def circuit_breaker(
    failure_threshold: int = 5,
    recovery_timeout: float = 30.0,
    *,
    name: str | None = None,
    half_open_probes: int = 1,
    store: BreakerStore | None = None,
    clock: Clock | None = None,
    failure_exceptions: tuple[type[BaseException], ...] = (Exception,),
    ignore_exceptions: tuple[type[BaseException], ...] = (ResilienceError,),
    is_failure: Callable[[BaseException], bool] | None = None,
    on_state_change: StateListener | Iterable[StateListener] | None = None,
) -> Callable[[Callable[P, Awaitable[T]]], BreakerProtected[P, T]]:
    """The quick-start decorator: a :class:`CircuitBreaker` that opens after
    ``failure_threshold`` consecutive failures and stays open ``recovery_timeout`` seconds.

    ::

        @circuit_breaker(failure_threshold=5, recovery_timeout=30)
        async def call_external_api() -> dict: ...

    While open, calls raise :class:`~.errors.CircuitOpenError` (an
    :class:`~edge_kv.core.errors.Unavailable`, 503) without running. After
    ``recovery_timeout`` the breaker admits ``half_open_probes`` trial calls: if they
    succeed it closes, otherwise it opens for another ``recovery_timeout``.

    It is a :class:`CircuitBreaker` with ``BreakerConfig(window="count",
    window_size=failure_threshold, minimum_calls=failure_threshold,
    failure_rate_threshold=100, wait_in_open=recovery_timeout)``; use that class directly
    for failure-rate or slow-call thresholds and time windows. Each decorated function gets
    its own breaker, named ``name`` or ``module.qualname`` of the function (the name is the
    key of a shared ``store`` such as :class:`~.breaker_redis.RedisBreakerStore`), reachable
    as ``fn.breaker``. Which exceptions count as failures: see :class:`CircuitBreaker`
    (by default every ``Exception`` but the package's own local refusals).
    """
    config = BreakerConfig(
        window="count",
        window_size=failure_threshold,
        minimum_calls=failure_threshold,
        failure_rate_threshold=100.0,
        wait_in_open=recovery_timeout,
        half_open_probes=half_open_probes,
    )
    if name is not None:
        check_key(name)

    def decorate(fn: Callable[P, Awaitable[T]]) -> BreakerProtected[P, T]:
        breaker = CircuitBreaker(
            name if name is not None else f"{fn.__module__}.{fn.__qualname__}",
            config,
            store=store,
            clock=clock,
            failure_exceptions=failure_exceptions,
            ignore_exceptions=ignore_exceptions,
            is_failure=is_failure,
            on_state_change=on_state_change,
        )
        wrapper = breaker(fn)
        wrapper.breaker = breaker  # type: ignore[attr-defined]
        return cast("BreakerProtected[P, T]", wrapper)

    return decorate
