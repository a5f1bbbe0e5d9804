"""A per-isolate JWKS cache: one entry per issuer (``jwks_uri``), bounded in every way.

Rules (all bounds in :class:`JwksCachePolicy`, validated at construction):

* **Freshness**: a fetched JWKS is fresh for ``Cache-Control: max-age`` seconds, clamped
  to ``[min_ttl_s, max_ttl_s]``; ``no-store``/``no-cache`` count as ``min_ttl_s``, no or
  an unusable header as ``default_ttl_s``. An expired entry is refetched by the next
  request that needs it; while that fetch is in flight, other requests keep using the
  expired keys (stale-while-revalidate).
* **Rotation**: a key that disappears from the issuer's JWKS stays accepted for
  ``rotation_grace_s`` (tokens signed just before the switch still verify); a new key is
  used as soon as it is seen. ``rotation_grace_s = 0`` makes removal immediate.
* **Unknown ``kid``**: a token naming a ``kid`` the cache does not hold triggers a refetch
  at most once per ``unknown_kid_interval_s`` per issuer, claimed before the fetch starts,
  so a flood of random ``kid`` values costs the JWKS endpoint one request per interval.
* **Endpoint down**: a failed fetch (network error, timeout, non-200, a body that is not a
  usable JWKS, larger than ``max_body_bytes`` or with more than ``max_keys`` keys) never
  discards cached keys; they keep verifying for ``stale_if_error_s`` past their expiry.
  After a failure no new attempt is made for ``failure_backoff_s``. Only an issuer whose
  keys were never fetched (or are older than that) fails, with
  :class:`JwksUnavailable` (503): authentication fails closed.

In-flight fetches are not shared between requests: in workerd an I/O object belongs to
the request that created it, so each refresh is claimed by one request (a flag set before
the fetch) and the others use what is cached. Only a cold entry (no keys at all) may be
fetched by several concurrent requests at once, bounded by the isolate's concurrency.

The fetch function and the clock are injected (``fetch(url) -> FetchedText``,
``clock() -> seconds``) so the logic runs on CPython with fakes; the default fetch is
:func:`edge_kv.edge.runtime.webcrypto.fetch_text`.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from edge_kv.core.errors import InvalidInput, Unavailable
from edge_kv.core.jwt import InvalidToken, Jwk, parse_jwks
from edge_kv.edge.runtime.webcrypto import FetchedText, fetch_text

__all__ = [
    "Fetch",
    "JwksCache",
    "JwksCachePolicy",
    "JwksUnavailable",
    "cache_max_age",
]

Fetch = Callable[[str], Awaitable[FetchedText]]
Clock = Callable[[], float]
_KeyId = tuple[str, str | None, str, tuple[tuple[str, str], ...], bytes]


class JwksUnavailable(Unavailable):
    """The issuer's keys could not be fetched and none are cached: 503 (fail closed)."""

    code = "jwks_unavailable"


def cache_max_age(value: str | None) -> int | None:
    """Seconds of freshness a ``Cache-Control`` value grants: ``max-age=N`` (the first
    one), ``0`` for ``no-store``/``no-cache``, ``None`` when it says nothing usable."""
    if not value:
        return None
    max_age: int | None = None
    for part in value.split(","):
        name, _, arg = part.strip().partition("=")
        name = name.strip().lower()
        arg = arg.strip().strip('"')
        if name in ("no-store", "no-cache"):
            return 0
        if name == "max-age" and max_age is None and arg.isascii() and arg.isdigit():
            max_age = int(arg[:12])
    return max_age


def _number(name: str, value: object, lo: float, hi: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not lo <= value <= hi
    ):
        raise InvalidInput(f"{name} must be a number in [{lo:g}, {hi:g}]")
    return float(value)


@dataclass(frozen=True)
class JwksCachePolicy:
    """Bounds of :class:`JwksCache` (seconds unless said otherwise)."""

    default_ttl_s: float = 300
    min_ttl_s: float = 60
    max_ttl_s: float = 86_400
    unknown_kid_interval_s: float = 60
    rotation_grace_s: float = 600
    failure_backoff_s: float = 30
    stale_if_error_s: float = 86_400
    fetch_timeout_s: float = 5
    max_body_bytes: int = 256 * 1024
    max_keys: int = 100
    max_issuers: int = 64
    allow_http: bool = False  # plain http jwks_uri (local tests only)

    def __post_init__(self) -> None:
        day = 86_400.0
        _number("min_ttl_s", self.min_ttl_s, 0, 7 * day)
        _number("max_ttl_s", self.max_ttl_s, self.min_ttl_s, 7 * day)
        _number("default_ttl_s", self.default_ttl_s, self.min_ttl_s, self.max_ttl_s)
        _number("unknown_kid_interval_s", self.unknown_kid_interval_s, 1, day)
        _number("rotation_grace_s", self.rotation_grace_s, 0, 7 * day)
        _number("failure_backoff_s", self.failure_backoff_s, 1, day)
        _number("stale_if_error_s", self.stale_if_error_s, 0, 30 * day)
        _number("fetch_timeout_s", self.fetch_timeout_s, 0.1, 60)
        for name, lo, hi in (
            ("max_body_bytes", 1024, 4 << 20),
            ("max_keys", 1, 1000),
            ("max_issuers", 1, 10_000),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise InvalidInput(f"{name} must be an integer in [{lo}, {hi}]")
        if not isinstance(self.allow_http, bool):
            raise InvalidInput("allow_http must be a boolean")

    def ttl(self, cache_control: str | None) -> float:
        max_age = cache_max_age(cache_control)
        if max_age is None:
            return self.default_ttl_s
        return min(max(float(max_age), self.min_ttl_s), self.max_ttl_s)


def _key_id(key: Jwk) -> _KeyId:
    return (key.alg, key.kid, key.kty, tuple(sorted(key.members.items())), key.secret)


@dataclass
class _Entry:
    default_alg: str | None
    keys: dict[_KeyId, Jwk] = field(default_factory=dict)
    retired: dict[_KeyId, tuple[Jwk, float]] = field(default_factory=dict)  # key → (jwk, until)
    fetched: bool = False
    fresh_until: float = -math.inf
    next_attempt_at: float = -math.inf
    next_unknown_kid_at: float = -math.inf
    refreshing: bool = False
    fetches: int = 0
    failures: int = 0
    last_error: str | None = None


class JwksCache:
    """The keys of each issuer, fetched from its ``jwks_uri`` and cached in the isolate.

    ``await cache.keys(jwks_uri, kid=..., default_alg=...)`` returns the usable keys
    (those with that ``kid`` when one is given), raising
    :class:`~edge_kv.core.jwt.InvalidToken` (``reason="key"``) for an unknown ``kid`` and
    :class:`JwksUnavailable` when there are no keys to use.
    """

    def __init__(
        self,
        policy: JwksCachePolicy | None = None,
        *,
        fetch: Fetch | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.policy = policy or JwksCachePolicy()
        self._fetch = fetch
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    # -- inspection (tests, metrics) -------------------------------------------------

    def stats(self, jwks_uri: str) -> dict[str, Any]:
        e = self._entries.get(jwks_uri)
        if e is None:
            return {"cached": False}
        return {
            "cached": e.fetched,
            "keys": len(e.keys),
            "retired": len(e.retired),
            "fresh_until": e.fresh_until,
            "fetches": e.fetches,
            "failures": e.failures,
            "last_error": e.last_error,
        }

    # -- the work ---------------------------------------------------------------------

    def _check_uri(self, jwks_uri: str) -> None:
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise InvalidInput("jwks_uri must be a non-empty URL")
        parts = urlsplit(jwks_uri)
        schemes = ("https", "http") if self.policy.allow_http else ("https",)
        if parts.scheme not in schemes or not parts.hostname or parts.username or parts.password:
            raise InvalidInput(f"jwks_uri must be an absolute {' or '.join(schemes)} URL without credentials")

    def _entry(self, jwks_uri: str, default_alg: str | None) -> _Entry:
        e = self._entries.get(jwks_uri)
        if e is None or e.default_alg != default_alg:
            e = _Entry(default_alg)
            self._entries[jwks_uri] = e
            while len(self._entries) > self.policy.max_issuers:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(jwks_uri)
        return e

    async def _get(self, jwks_uri: str) -> FetchedText:
        if self._fetch is not None:
            return await self._fetch(jwks_uri)
        return await fetch_text(
            jwks_uri, timeout_s=self.policy.fetch_timeout_s, max_bytes=self.policy.max_body_bytes
        )

    async def _refresh(self, jwks_uri: str, e: _Entry) -> bool:
        """Fetch and install the JWKS; ``False`` (cache untouched) on any failure."""
        p = self.policy
        e.refreshing = True
        e.fetches += 1
        try:
            try:
                got = await self._get(jwks_uri)
                if not isinstance(got, FetchedText):
                    raise TypeError("fetch must return a FetchedText")
                if got.status != 200:
                    raise ValueError(f"HTTP {got.status}")
                if len(got.text.encode("utf-8", "surrogatepass")) > p.max_body_bytes:
                    raise ValueError(f"body larger than {p.max_body_bytes} bytes")
                jwks = parse_jwks(got.text, default_alg=e.default_alg)
                if len(jwks) > p.max_keys:
                    raise ValueError(f"{len(jwks)} keys; at most {p.max_keys} are accepted")
            except Exception as exc:  # fetch errors of any kind, InvalidInput from parse_jwks
                now = self._clock()
                e.failures += 1
                e.last_error = f"{type(exc).__name__}: {exc}"[:300]
                e.next_attempt_at = now + p.failure_backoff_s
                return False
            now = self._clock()
            new = {_key_id(k): k for k in jwks.keys}
            for ident, old in e.keys.items():
                if ident not in new and p.rotation_grace_s > 0:
                    e.retired.setdefault(ident, (old, now + p.rotation_grace_s))
            for ident in new:
                e.retired.pop(ident, None)
            e.retired = {i: (k, until) for i, (k, until) in e.retired.items() if until > now}
            e.keys = new
            e.fetched = True
            e.fresh_until = now + p.ttl(got.header("cache-control"))
            e.next_attempt_at = -math.inf
            e.last_error = None
            return True
        finally:
            e.refreshing = False

    def _usable(self, e: _Entry, now: float) -> list[Jwk]:
        if not e.fetched or now >= e.fresh_until + self.policy.stale_if_error_s:
            return []
        current = list(e.keys.values())
        return current + [k for k, until in e.retired.values() if until > now]

    async def keys(
        self, jwks_uri: str, *, kid: str | None = None, default_alg: str | None = None
    ) -> list[Jwk]:
        """The keys to try for a token with ``kid`` (all usable keys when ``None``)."""
        self._check_uri(jwks_uri)
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("kid must be a string", "header")
        p = self.policy
        e = self._entry(jwks_uri, default_alg)
        now = self._clock()
        refreshed = False
        if now >= e.fresh_until and now >= e.next_attempt_at and not (e.refreshing and e.fetched):
            refreshed = await self._refresh(jwks_uri, e)
            now = self._clock()
        usable = self._usable(e, now)
        unknown_kid = kid is not None and not any(k.kid == kid for k in usable)
        if (
            unknown_kid
            and not refreshed
            and not e.refreshing
            and now >= e.next_unknown_kid_at
            and now >= e.next_attempt_at
        ):
            e.next_unknown_kid_at = now + p.unknown_kid_interval_s  # claimed before the fetch
            await self._refresh(jwks_uri, e)
            now = self._clock()
            usable = self._usable(e, now)
        if not usable:
            detail = f"no keys for {jwks_uri}"
            if e.last_error:
                detail += f" (last fetch: {e.last_error})"
            raise JwksUnavailable(detail)
        if kid is None:
            return usable
        # As the core selects: the keys with that kid, else the keys that have no kid.
        matching = [k for k in usable if k.kid == kid] or [k for k in usable if k.kid is None]
        if not matching:
            raise InvalidToken(f"no key with kid {kid!r} for this issuer", "key")
        return matching
