"""Worker-side rate limiting: deny/allow lists, block cache, backends, fail-open/closed.

:class:`EdgeLimiter` decides one request against the limits that apply to it and
returns a :class:`LimitVerdict` carrying the HTTP status to answer with (``None`` to let
the request through) and the headers to add either way. The backend of each limit
(a Durable Object per key, or KV) is a :class:`Backend`; this module does no I/O of
its own, so it runs unchanged under CPython tests.

Several limits on one request (per IP, per API key, per route) are evaluated in
order and evaluation stops at the first refusal. Tiers *inside* one limit are
all-or-nothing (one transaction); *across* limits units already taken by an earlier
limit are not given back when a later one refuses (as with Cloudflare's own rate
limiting rules). Put the cheapest, most likely to refuse limit first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from edge_kv.core.decision import Decision
from edge_kv.core.errors import InvalidInput, Unavailable
from edge_kv.core.headers import HasPolicy, rate_limit_headers
from edge_kv.core.ratelimit import Policy
from edge_kv.core.validate import check_cost
from edge_kv.edge.ratelimit.blockcache import BlockCache
from edge_kv.edge.ratelimit.config import LimitsConfig, LimitSpec
from edge_kv.edge.ratelimit.keys import limit_key

BackendReply = tuple[Decision, Sequence[Decision], int]


class Backend(Protocol):
    """Where a limit's state lives.

    Returns (combined decision, per-tier decisions, the backend's clock in µs at the
    decision), the last so callers can measure time where the decision was made.
    """

    async def decide(self, spec: LimitSpec, key: str, cost: int, now_us: int | None) -> BackendReply: ...


class BackendError(Unavailable):
    """The backend failed or timed out; the limit's ``on_error`` decides what happens."""


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class LimitVerdict:
    """What to do with a request.

    ``status`` is ``None`` to serve it, 429 (rate limited), 403 (deny list) or 503
    (a fail-closed limit's backend failed). ``headers`` go on the response in every
    case. ``source`` says where the answer came from: ``allow``, ``deny``,
    ``none`` (no limit applied), ``backend``, ``block-cache`` or ``fail-open``/
    ``fail-closed``.
    """

    status: int | None
    headers: tuple[tuple[str, str], ...] = ()
    decision: Decision | None = None
    limit: str | None = None
    source: str = "none"
    detail: str | None = None
    failures: tuple[str, ...] = field(default=())
    decisions: tuple[Decision, ...] = ()
    at_us: int | None = None

    @property
    def allowed(self) -> bool:
        return self.status is None


def _headers(policies: list[Policy], decisions: list[Decision]) -> tuple[tuple[str, str], ...]:
    if not decisions:
        return ()
    typed: list[HasPolicy] = list(policies)
    return tuple(rate_limit_headers(typed, decisions))


class EdgeLimiter:
    """Applies a :class:`LimitsConfig` with one backend per backend kind (``do``/``kv``)."""

    def __init__(
        self,
        config: LimitsConfig,
        backends: dict[str, Backend],
        block_cache: BlockCache | None = None,
    ) -> None:
        self.config = config
        self.backends = backends
        self.block_cache = block_cache if block_cache is not None else BlockCache()

    async def check(
        self,
        limits: Sequence[LimitSpec],
        *,
        ip: str | None,
        subject: str | None = None,
        route: str | None = None,
        cost: int = 1,
        at_us: int | None = None,
    ) -> LimitVerdict:
        """Decide one request. ``at_us`` is an explicit clock for tests (``None``: real time).

        Raises ``ValueError`` for a bad ``cost`` before any state is touched.
        """
        for spec in limits:
            for tier in spec.tiers:
                check_cost(cost, tier.limit)
        if self.config.deny.matches(ip, subject):
            return LimitVerdict(403, source="deny", detail="the client is on the deny list")
        if self.config.allow.matches(ip, subject):
            return LimitVerdict(None, source="allow")
        keyed: list[tuple[LimitSpec, str]] = []
        for spec in limits:
            key = limit_key(spec, ip=ip, subject=subject, route=route)
            if key is not None:
                keyed.append((spec, key))
        return await self.check_keys(keyed, cost=cost, at_us=at_us)

    async def check_keys(
        self, keyed: Sequence[tuple[LimitSpec, str]], *, cost: int = 1, at_us: int | None = None
    ) -> LimitVerdict:
        """Decide explicit ``(limit, key)`` pairs (no lists): for trusted service callers."""
        for spec, _ in keyed:
            for tier in spec.tiers:
                check_cost(cost, tier.limit)
        policies: list[Policy] = []
        decisions: list[Decision] = []
        failures: list[str] = []
        last_at: int | None = None
        for spec, key in keyed:
            clock = at_us if at_us is not None else now_us()
            cache_key = f"{spec.name}|{key}"
            cached = self.block_cache.check(cache_key, clock, cost)
            if cached is not None:
                policies.extend(spec.tiers)
                decisions.append(cached)
                return LimitVerdict(429, _headers(policies, decisions), cached, spec.name, "block-cache")
            try:
                combined, tier_decisions, backend_us = await self._call(spec, key, cost, at_us)
            except BackendError as exc:
                failures.append(f"{spec.name}: {exc}")
                if spec.on_error == "open":
                    continue
                return LimitVerdict(
                    503,
                    (("Retry-After", "1"),),
                    None,
                    spec.name,
                    "fail-closed",
                    f"limit {spec.name!r} is unavailable and configured fail-closed",
                    tuple(failures),
                )
            policies.extend(spec.tiers)
            decisions.extend(tier_decisions)
            last_at = backend_us
            if not combined.allowed:
                self.block_cache.block(cache_key, combined, clock, cost)
                return LimitVerdict(
                    429,
                    _headers(policies, decisions),
                    combined,
                    spec.name,
                    "backend",
                    decisions=tuple(tier_decisions),
                    at_us=backend_us,
                )
        if not decisions:
            return LimitVerdict(None, source="fail-open" if failures else "none", failures=tuple(failures))
        combined_all = min(decisions, key=lambda d: (d.remaining, -d.reset_after_us))
        return LimitVerdict(
            None,
            _headers(policies, decisions),
            combined_all,
            None,
            "fail-open" if failures else "backend",
            failures=tuple(failures),
            decisions=tuple(decisions),
            at_us=last_at,
        )

    async def _call(self, spec: LimitSpec, key: str, cost: int, at_us: int | None) -> BackendReply:
        backend = self.backends.get(spec.backend)
        if backend is None:
            raise BackendError(f"no backend {spec.backend!r} is configured")
        try:
            return await asyncio.wait_for(backend.decide(spec, key, cost, at_us), spec.timeout_ms / 1000)
        except TimeoutError as exc:
            raise BackendError(f"timed out after {spec.timeout_ms} ms") from exc
        except InvalidInput:
            raise  # the caller's input, not the backend, is at fault
        except Exception as exc:
            raise BackendError(f"{type(exc).__name__}: {exc}") from exc
