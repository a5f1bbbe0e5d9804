"""Redis-backed rate limiter: every tier of a key decided in one Lua call, one round trip.

The arithmetic is :mod:`edge_kv.core.ratelimit`; ``limit.lua`` (package data beside
this module) mirrors it and a property test proves they agree. Time is the Redis server's (``TIME`` inside the
script), so clients with skewed clocks still share one consistent limit.

Failure policy: a call that cannot reach Redis within ``timeout`` seconds (refused
connection, dead or paused server, any Redis error) either admits (``fail_open=True``;
the result says ``degraded=True``) or raises :class:`RateLimiterUnavailable`
(``fail_open=False``, the default). It never waits longer than ``timeout``, and a
refused connection fails at once (see :mod:`edge_kv.origin._redis`). Works with
``redis.asyncio.Redis`` and ``redis.asyncio.cluster.RedisCluster``.

Decisions go through the client's auto-pipelined transport (:mod:`edge_kv.origin._pipeline`):
the decisions of one event-loop tick share one write and one timer. ``autopipeline=False``
sends each through redis-py's connection pool instead (same results, same errors).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from edge_kv.core.decision import Decision, most_restrictive
from edge_kv.core.errors import Unavailable
from edge_kv.core.headers import rate_limit_headers
from edge_kv.core.ratelimit import (
    MAX_EXACT,
    FixedWindow,
    Policy,
    SlidingLog,
    SlidingWindowCounter,
    TokenBucket,
)
from edge_kv.core.validate import MAX_KEY_LENGTH, check_cost, check_key
from edge_kv.origin import _redis
from edge_kv.origin._scripts import LuaScript

log = logging.getLogger(__name__)

LIMIT_SCRIPT = LuaScript.from_package("edge_kv.origin.ratelimit", "limit.lua")


class RateLimiterUnavailable(Unavailable, RuntimeError):
    """Redis could not be asked in time and the limiter is configured to fail closed.
    An :class:`~edge_kv.core.errors.Unavailable` (503); still a ``RuntimeError``."""

    status = 503
    code = "rate_limiter_unavailable"


# What a decision that could not be taken raises (typed by _unavailable): transport
# failures, from the transport unwrapped, and any Redis error.
_FAILED: tuple[type[BaseException], ...] = (RateLimiterUnavailable, RedisError, *_redis.UNREACHABLE)


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    """The combined decision, each tier's decision, and the Redis time it was taken at.

    ``degraded`` is true when Redis was unreachable and the limiter failed open: the
    request was admitted without being counted.
    """

    decision: Decision
    tiers: tuple[Decision, ...]
    policies: tuple[Policy, ...]
    now_us: int
    degraded: bool = False

    @property
    def allowed(self) -> bool:
        return self.decision.allowed

    def headers(self) -> list[tuple[str, str]]:
        """``RateLimit-Policy``, ``RateLimit`` and (when refused) ``Retry-After``."""
        if self.degraded:
            return []
        return rate_limit_headers(self.policies, self.tiers)


def _wire(policy: Policy) -> tuple[str, str, int, int]:
    """(key suffix, Lua kind, limit, period) for one policy."""
    if isinstance(policy, TokenBucket):
        return "tb", "tb", policy.capacity, policy.interval_us
    if isinstance(policy, SlidingLog):
        return "log", "log", policy.limit, policy.window_us
    if isinstance(policy, SlidingWindowCounter):
        return "swc", "swc", policy.limit, policy.window_ms
    if isinstance(policy, FixedWindow):
        return "fw", "fw", policy.limit, policy.window_us
    raise ValueError(f"not a rate-limit policy: {policy!r}")


class RateLimiter:
    """One or more limits (tiers) applied together to each key.

    ``redis`` is a ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``
    client. State keys are
    ``{prefix}{{{key}}}:{tier name}:{kind}``: the key is a hash tag, so all tiers of a key
    live in one Cluster slot and one script can touch them all.
    """

    def __init__(
        self,
        redis: Any,
        policies: Policy | Sequence[Policy],
        *,
        prefix: str = "edge_kv:rl:",
        timeout: float = 0.25,
        fail_open: bool = False,
        max_key_length: int = MAX_KEY_LENGTH,
        autopipeline: bool = True,
    ) -> None:
        tiers = (
            (policies,)
            if isinstance(policies, (TokenBucket, SlidingLog, SlidingWindowCounter, FixedWindow))
            else tuple(policies)
        )
        if not tiers:
            raise ValueError("at least one policy is required")
        wires = [_wire(p) for p in tiers]
        names = [p.name for p in tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must be distinct, got {names}")
        if not isinstance(prefix, str):
            raise ValueError("prefix must be a str")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout < float("inf")
        ):
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        self.redis = _redis.prepare(redis)
        self.policies: tuple[Policy, ...] = tiers
        self.prefix = prefix
        self.timeout = float(timeout)
        self.fail_open = fail_open
        self.max_key_length = max_key_length
        self.autopipeline = bool(autopipeline)
        self._suffixes = [f"}}:{p.name}:{w[0]}" for p, w in zip(tiers, wires, strict=True)]
        # Static script arguments, encoded once (the hot path only adds time and cost).
        self._max_cost = min(p.limit for p in tiers)  # a cost above any tier's limit is refused
        self._single: str | None = tiers[0].name if len(tiers) == 1 else None
        self._spec = ",".join(f"{kind}:{limit}:{period}" for _, kind, limit, period in wires).encode("ascii")

    def keys_for(self, key: str) -> list[str]:
        """The Redis keys holding ``key``'s state, one per tier."""
        check_key(key, max_length=self.max_key_length)
        return [f"{self.prefix}{{{key}{suffix}" for suffix in self._suffixes]

    def _check(self, key: str, cost: int, now_us: int | None) -> list[str]:
        keys = self.keys_for(key)
        for policy in self.policies:
            check_cost(cost, policy.limit)
        if now_us is not None and (
            isinstance(now_us, bool) or not isinstance(now_us, int) or not 0 <= now_us < MAX_EXACT // 2
        ):
            raise ValueError(f"now_us must be an integer in [0, 2**52), got {now_us!r}")
        return keys

    async def hit(self, key: str, cost: int = 1, *, now_us: int | None = None) -> RateLimitResult:
        """Spend ``cost`` units on ``key`` if every tier has room; report the decision.

        ``now_us`` overrides the Redis clock (tests, replays); leave it ``None`` in production.
        Bad arguments raise ``ValueError`` before anything is sent to Redis.
        """
        if type(cost) is int and 0 <= cost <= self._max_cost and now_us is None:
            keys = self.keys_for(key)  # the common case; anything else is checked in full
            args: list[bytes | int] = [b"", cost, self._spec]
        else:
            keys = self._check(key, cost, now_us)
            args = [b"" if now_us is None else now_us, cost, self._spec]
        try:
            fut = None
            if self.autopipeline:
                if len(keys) > 1:
                    _redis.check_same_slot(self.redis, keys, "rate limiter")
                fut = _redis.script_future(LIMIT_SCRIPT, self.redis, keys, args, self.timeout)
            if fut is not None:  # the transport: its errors come unwrapped
                reply = await fut
            else:
                reply = await _redis.run_script(
                    LIMIT_SCRIPT, self.redis, keys, args, self.timeout, "rate limiter", RateLimiterUnavailable
                )
        except _FAILED as exc:
            return self._unavailable(exc)
        return self._result(reply)

    async def peek(self, key: str, *, now_us: int | None = None) -> RateLimitResult:
        """The current state without spending anything (a cost-0 hit)."""
        return await self.hit(key, 0, now_us=now_us)

    async def reset(self, key: str) -> None:
        """Forget ``key``'s state in every tier (an administrative unblock).

        Raises :class:`RateLimiterUnavailable` if Redis does not answer in ``timeout``.
        """
        keys = self.keys_for(key)
        await _redis.bounded(
            self.redis.delete(*keys), self.timeout, "rate limiter reset", RateLimiterUnavailable
        )

    def _result(self, reply: bytes | str) -> RateLimitResult:
        values = reply.split(b"," if type(reply) is bytes else ",")  # type: ignore[arg-type]
        if self._single is not None:  # one tier: no lists, no combining
            now_us, allowed, limit, remaining, retry, reset = map(int, values)
            decision = Decision(bool(allowed), limit, remaining, retry, reset, self._single)
            return RateLimitResult(decision, (decision,), self.policies, now_us)
        ints = list(map(int, values))
        decisions = []
        for i, policy in enumerate(self.policies):
            allowed, limit, remaining, retry, reset = ints[1 + 5 * i : 6 + 5 * i]
            decisions.append(Decision(bool(allowed), limit, remaining, retry, reset, policy.name))
        return RateLimitResult(most_restrictive(decisions), tuple(decisions), self.policies, ints[0])

    def _unavailable(self, exc: BaseException) -> RateLimitResult:
        cause = exc.__cause__ if isinstance(exc, RateLimiterUnavailable) and exc.__cause__ else exc
        reason = _redis.describe(cause)
        if not self.fail_open:
            raise RateLimiterUnavailable(f"rate limiter store unavailable ({reason})") from cause
        log.warning("rate limiter failing open: %s", reason)
        decisions = tuple(Decision(True, p.limit, p.limit, 0, 0, p.name) for p in self.policies)
        return RateLimitResult(most_restrictive(list(decisions)), decisions, self.policies, 0, degraded=True)
