"""Pure semantics of a *shared* HTTP cache: RFC 9111, RFC 5861 and RFC 9211.

Everything here is arithmetic on header values; nothing stores or fetches. Time is passed in
as float seconds since the epoch; headers are sequences of ``(name, value)`` pairs whose
names compare case-insensitively. Unusable input raises
:class:`edge_kv.core.errors.InvalidInput`.

The flow an edge gateway follows with these functions:

1. ``storable(method, status, request_headers, response_headers, policy)`` on an origin
   response; if it says yes, keep the body and
   ``StoredResponse.from_exchange(...)`` (or the constructor) as metadata
   (``to_json()`` / ``from_json()``), under ``cache_key(rule, ...)``.
2. On a request: ``vary_matches(stored, request_headers)``, then
   ``evaluate(stored, request_headers, now)`` gives ``"hit"``,
   ``"stale-while-revalidate"`` or ``"revalidate"`` (with ``conditional_headers``); a 304
   from the origin is folded in with ``merge_not_modified``; if the origin fails,
   ``Freshness.stale_if_error_ok`` says whether the stale copy may be served.
3. ``client_conditional`` answers a client's own ``If-None-Match`` / ``If-Modified-Since``
   with a 304 from the cache; ``age_header`` and ``cache_status`` / ``x_cache_label`` decorate
   the response; ``invalidation_targets`` lists what an unsafe request invalidates (§4.4).

Deliberate choices (each one conservative):

* Field-qualified ``no-cache="Set-Cookie"`` and ``private="X"`` are treated as unqualified:
  a shared cache here never stores a ``private`` response and always revalidates a
  ``no-cache`` one, instead of storing/serving with the named fields removed.
* Duplicate directives: the most restrictive value wins (the smallest ``max-age``,
  ``s-maxage``, ``stale-while-revalidate``, ``stale-if-error``, ``max-stale``; the largest
  ``min-fresh``). A ``max-age``/``s-maxage`` whose argument is not delta-seconds (``max-age=abc``,
  ``max-age=-1``) counts as ``0`` (RFC 9111 §4.2.1: "caches are encouraged to consider
  responses that have invalid freshness information ... to be stale"); an invalid argument
  to any other delta-seconds directive makes that occurrence ignored. Values beyond 2**31 are
  2**31 (§1.2.2). Quoted arguments (``max-age="60"``) are accepted.
* ``s-maxage`` carries ``proxy-revalidate`` semantics for a shared cache (§5.2.2.10), so
  by default it disables serving stale (``stale-while-revalidate``/``stale-if-error``), as
  §4.2.4 says; ``evaluate(..., strict_s_maxage=False)`` follows common CDN practice instead.
* Stale windows are closed: ``max-stale=N``, ``stale-while-revalidate=N`` and
  ``stale-if-error=N`` allow a staleness ``0 <= age - lifetime <= N`` (``N`` must be > 0 for
  the two RFC 5861 directives). A response is fresh iff ``lifetime > age`` (§4.2).
* ``Pragma`` is ignored (deprecated by RFC 9111 §5.4).
* ``merge_not_modified`` always takes ``Date`` and ``Age`` from the 304 (dropping the old
  ones when the 304 has none), since the stored times are refreshed at the same moment.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import quote, unquote, urljoin, urlsplit

from edge_kv.core.errors import InvalidInput

__all__ = [
    "AGE_CAP",
    "CACHE_STATUS_FWD",
    "DEFAULT_HEURISTIC_CAP",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_QUERY_DROP",
    "HEURISTIC_STATUSES",
    "HOP_BY_HOP",
    "MAX_KEY_BYTES",
    "Action",
    "CacheControl",
    "CacheOutcome",
    "Freshness",
    "KeyRule",
    "StorePolicy",
    "StoredResponse",
    "age_header",
    "cache_key",
    "cache_status",
    "cache_status_for",
    "client_conditional",
    "conditional_headers",
    "current_age",
    "evaluate",
    "format_http_date",
    "freshness_lifetime",
    "header_value",
    "invalidation_targets",
    "merge_not_modified",
    "normalize_url",
    "not_modified_matches",
    "parse_http_date",
    "storable",
    "vary_matches",
    "vary_values",
    "x_cache_label",
]

Headers = Sequence[tuple[str, str]]

AGE_CAP = 2**31
"""The largest delta-seconds / ``Age`` value (RFC 9111 §1.2.2, §5.1)."""

DEFAULT_HEURISTIC_CAP = 86_400.0
"""Upper bound of a heuristic freshness lifetime (one day; RFC 9111 §4.2.2 leaves it open)."""

DEFAULT_MAX_BODY_BYTES = 25 * 1024 * 1024
"""Default largest body stored (the Workers KV value limit)."""

MAX_KEY_BYTES = 512
"""Cache keys stay at or under this many UTF-8 bytes (the Workers KV key limit)."""

HEURISTIC_STATUSES: frozenset[int] = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
"""Statuses heuristically cacheable by default (RFC 9110 §15.1)."""

HOP_BY_HOP: frozenset[str] = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade"}
)
"""Fields a cache never stores (RFC 9111 §3.1); fields named by ``Connection`` also."""

DEFAULT_QUERY_DROP: frozenset[str] = frozenset(
    {"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "gclid", "fbclid"}
)

CACHE_STATUS_FWD: frozenset[str] = frozenset(
    {"bypass", "method", "uri-miss", "vary-miss", "miss", "request", "stale", "partial"}
)
"""The ``fwd`` parameter values RFC 9211 §2.2 defines."""

Action = Literal["hit", "stale-while-revalidate", "revalidate"]
CacheOutcome = Literal["hit", "miss", "stale", "revalidated", "expired", "bypass", "error-stale"]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}

# ---------------------------------------------------------------------------------------
# headers and dates


def _check_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for pair in headers:
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise InvalidInput(f"a header must be a (name, value) pair, got {pair!r}")
        name, value = pair
        if not isinstance(name, str) or not isinstance(value, str) or not name:
            raise InvalidInput(f"a header must be a pair of strings with a name, got {pair!r}")
        out.append((name, value))
    return out


def _values(headers: Headers, name: str) -> list[str]:
    low = name.lower()
    return [v for n, v in headers if n.lower() == low]


def header_value(headers: Headers, name: str) -> str | None:
    """All field lines named ``name`` combined with ``", "`` (RFC 9110 §5.3), or None."""
    found = _values(headers, name)
    return ", ".join(found) if found else None


def _first(headers: Headers, name: str) -> str | None:
    """The first field line of a singleton field (Date, Expires, Age...): §4.2.1 says the
    first occurrence should be used."""
    found = _values(headers, name)
    return found[0] if found else None


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {m.lower(): i for i, m in enumerate(_MONTH_NAMES, start=1)}
_IMF = re.compile(r"^[A-Za-z]{3}, (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$")
_RFC850 = re.compile(r"^[A-Za-z]{6,9}, (\d{2})-([A-Za-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$")
_ASCTIME = re.compile(r"^[A-Za-z]{3} ([A-Za-z]{3}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})$")


def parse_http_date(value: str | None) -> float | None:
    """An HTTP-date (RFC 9110 §5.6.7: IMF-fixdate, obsolete RFC 850 and asctime forms) as
    epoch seconds, or None when absent or invalid. Two-digit RFC 850 years are 1970-2069."""
    if value is None:
        return None
    text = value.strip()
    parts: tuple[str, str, str, str, str, str] | None = None
    if m := _IMF.match(text):
        parts = (m[3], m[2], m[1], m[4], m[5], m[6])
    elif m := _RFC850.match(text):
        yy = int(m[3])
        parts = (str(2000 + yy if yy < 70 else 1900 + yy), m[2], m[1], m[4], m[5], m[6])
    elif m := _ASCTIME.match(text):
        parts = (m[6], m[1], m[2].strip(), m[3], m[4], m[5])
    if parts is None:
        return None
    year, mon, day, hh, mm, ss = parts
    month = _MONTHS.get(mon.lower())
    if month is None:
        return None
    y, d, h, mi, sec = int(year), int(day), int(hh), int(mm), int(ss)
    if not (1 <= d <= calendar.monthrange(y, month)[1] and h < 24 and mi < 60 and sec <= 60):
        return None
    return float(calendar.timegm((y, month, d, h, mi, min(sec, 59), 0, 0, 0)))


def format_http_date(ts: float) -> str:
    """``ts`` as an IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``), seconds truncated."""
    if not math.isfinite(ts):
        raise InvalidInput(f"not a finite time: {ts!r}")
    t = time.gmtime(math.floor(ts))
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTH_NAMES[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def _delta_seconds(raw: str | None) -> int | None:
    """delta-seconds = 1*DIGIT (RFC 9111 §1.2.2), capped at 2**31; None when invalid."""
    if raw is None:
        return None
    text = raw.strip()
    if not text or not text.isascii() or not text.isdigit():
        return None
    return min(int(text), AGE_CAP)


def _split_commas(value: str) -> list[str]:
    """Split a list-based field on commas outside quoted strings."""
    items: list[str] = []
    buf: list[str] = []
    in_quote = escaped = False
    for ch in value:
        if in_quote:
            buf.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
            buf.append(ch)
        elif ch == ",":
            items.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
    items.append("".join(buf).strip())
    return [i for i in items if i]


def _unquote(raw: str) -> str:
    text = raw.strip()
    if not text.startswith('"'):
        return text
    out: list[str] = []
    escaped = False
    for ch in text[1:]:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            break
        else:
            out.append(ch)
    return "".join(out)


# ---------------------------------------------------------------------------------------
# Cache-Control


@dataclass(frozen=True)
class CacheControl:
    """Parsed ``Cache-Control`` (RFC 9111 §5.2), request or response side.

    ``directives`` keeps every directive in order (name lower-cased, argument unquoted or
    None), unknown ones included. The properties apply the rules in the module docstring
    (most restrictive duplicate wins; an invalid ``max-age``/``s-maxage`` is 0)."""

    directives: tuple[tuple[str, str | None], ...] = ()

    @classmethod
    def parse(cls, value: str | None) -> CacheControl:
        if value is None:
            return cls()
        if not isinstance(value, str):
            raise InvalidInput(f"Cache-Control must be a string, got {type(value).__name__}")
        found: list[tuple[str, str | None]] = []
        for item in _split_commas(value):
            name, sep, arg = item.partition("=")
            name = name.strip().lower()
            if not name:
                continue
            found.append((name, _unquote(arg) if sep else None))
        return cls(tuple(found))

    @classmethod
    def from_headers(cls, headers: Headers) -> CacheControl:
        """All ``Cache-Control`` field lines of ``headers`` combined."""
        return cls.parse(header_value(headers, "cache-control"))

    def has(self, name: str) -> bool:
        low = name.lower()
        return any(n == low for n, _ in self.directives)

    def arguments(self, name: str) -> list[str | None]:
        low = name.lower()
        return [a for n, a in self.directives if n == low]

    def _freshness(self, name: str) -> int | None:
        args = self.arguments(name)
        if not args:
            return None
        parsed = [_delta_seconds(a) for a in args]
        return min(0 if p is None else p for p in parsed)

    def _window(self, name: str, *, largest: bool = False) -> int | None:
        parsed = [p for p in (_delta_seconds(a) for a in self.arguments(name)) if p is not None]
        if not parsed:
            return None
        return max(parsed) if largest else min(parsed)

    @property
    def max_age(self) -> int | None:
        return self._freshness("max-age")

    @property
    def s_maxage(self) -> int | None:
        return self._freshness("s-maxage")

    @property
    def stale_while_revalidate(self) -> int | None:
        return self._window("stale-while-revalidate")

    @property
    def stale_if_error(self) -> int | None:
        return self._window("stale-if-error")

    @property
    def min_fresh(self) -> int | None:
        return self._window("min-fresh", largest=True)

    @property
    def max_stale(self) -> float | None:
        """None (absent), seconds, or ``math.inf`` for a bare ``max-stale`` (any staleness)."""
        args = self.arguments("max-stale")
        if not args:
            return None
        limits = [float(p) for p in (_delta_seconds(a) for a in args if a is not None) if p is not None]
        if limits:
            return min(limits)
        return math.inf if any(a is None for a in args) else None

    @property
    def no_store(self) -> bool:
        return self.has("no-store")

    @property
    def no_cache(self) -> bool:
        """True for ``no-cache`` and for the field-qualified ``no-cache="..."`` alike."""
        return self.has("no-cache")

    @property
    def private(self) -> bool:
        """True for ``private`` and for the field-qualified ``private="..."`` alike."""
        return self.has("private")

    @property
    def public(self) -> bool:
        return self.has("public")

    @property
    def must_revalidate(self) -> bool:
        return self.has("must-revalidate")

    @property
    def proxy_revalidate(self) -> bool:
        return self.has("proxy-revalidate")

    @property
    def must_understand(self) -> bool:
        return self.has("must-understand")

    @property
    def immutable(self) -> bool:
        return self.has("immutable")

    @property
    def no_transform(self) -> bool:
        return self.has("no-transform")

    @property
    def only_if_cached(self) -> bool:
        return self.has("only-if-cached")


# ---------------------------------------------------------------------------------------
# the stored response


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{name} must be a finite number of seconds, got {value!r}")
    return float(value)


def _storable_headers(headers: Headers) -> tuple[tuple[str, str], ...]:
    """``headers`` without the fields a cache must not store (RFC 9111 §3.1)."""
    named = {t.strip().lower() for v in _values(headers, "connection") for t in v.split(",")}
    drop = HOP_BY_HOP | named
    return tuple((n, v) for n, v in headers if n.lower() not in drop)


@dataclass(frozen=True)
class StoredResponse:
    """What the cache keeps besides the body.

    ``request_time``/``response_time`` are when the request that produced it was sent and
    when the response arrived (RFC 9111 §4.2.3); ``vary`` the request's values of the fields
    the response's ``Vary`` names, as :func:`vary_values` computed them at store time."""

    status: int
    headers: tuple[tuple[str, str], ...]
    request_time: float
    response_time: float
    vary: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.status, bool) or not isinstance(self.status, int) or not 100 <= self.status <= 599:
            raise InvalidInput(f"status must be an integer 100..599, got {self.status!r}")
        object.__setattr__(self, "headers", tuple((n, v) for n, v in _check_headers(self.headers)))
        object.__setattr__(self, "vary", tuple((n, v) for n, v in _check_headers(self.vary)))
        _finite("request_time", self.request_time)
        _finite("response_time", self.response_time)
        if self.request_time > self.response_time:
            raise InvalidInput("request_time must not be after response_time")

    @classmethod
    def from_exchange(
        cls,
        status: int,
        response_headers: Headers,
        request_headers: Headers,
        request_time: float,
        response_time: float,
    ) -> StoredResponse:
        """Build the record for a response being stored: hop-by-hop fields dropped (§3.1) and
        the ``Vary`` selecting values taken from the request (``Vary: *`` keeps none: it
        never matches anyway)."""
        resp = _check_headers(response_headers)
        req = _check_headers(request_headers)
        selected = vary_values(header_value(resp, "vary"), req)
        return cls(status, _storable_headers(resp), request_time, response_time, selected or ())

    def header(self, name: str) -> str | None:
        """All field lines named ``name`` combined, or None."""
        return header_value(self.headers, name)

    @property
    def cache_control(self) -> CacheControl:
        return CacheControl.from_headers(self.headers)

    def to_json(self) -> dict[str, Any]:
        """A JSON-compatible dict (``from_json`` reads it back, or its ``json.dumps``)."""
        return {
            "v": 1,
            "status": self.status,
            "headers": [[n, v] for n, v in self.headers],
            "request_time": self.request_time,
            "response_time": self.response_time,
            "vary": [[n, v] for n, v in self.vary],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> StoredResponse:
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError as exc:
                raise InvalidInput(f"stored response metadata is not JSON: {exc}") from exc
        if not isinstance(data, Mapping) or data.get("v") != 1:
            raise InvalidInput("stored response metadata must be an object with v=1")
        try:
            headers = tuple((str(n), str(v)) for n, v in data["headers"])
            vary = tuple((str(n), str(v)) for n, v in data.get("vary", ()))
            return cls(data["status"], headers, data["request_time"], data["response_time"], vary)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InvalidInput):
                raise
            raise InvalidInput(f"stored response metadata is malformed: {exc!r}") from exc


# ---------------------------------------------------------------------------------------
# storing


@dataclass(frozen=True)
class StorePolicy:
    """What this cache agrees to store beyond RFC 9111's shared-cache rules."""

    cacheable_statuses: frozenset[int] = HEURISTIC_STATUSES
    store_set_cookie: bool = False
    store_private: bool = False
    store_authorized: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


def _has_explicit_freshness(cc: CacheControl, headers: Headers) -> bool:
    return cc.public or cc.max_age is not None or cc.s_maxage is not None or bool(_values(headers, "expires"))


def storable(
    method: str,
    status: int,
    request_headers: Headers,
    response_headers: Headers,
    policy: StorePolicy | None = None,
) -> tuple[bool, str]:
    """Whether a shared cache may store this response (RFC 9111 §3, §3.5), and why.

    The reason is ``"ok"`` or the first refusal among ``"method"``, ``"status"``,
    ``"no-store"``, ``"must-understand"``, ``"private"``, ``"authorization"``,
    ``"set-cookie"``, ``"too-large"``. A ``HEAD`` response is storable (metadata only; the
    caller keeps no body); ``Vary: *`` is storable but never matches (§4.1)."""
    pol = policy or StorePolicy()
    req = _check_headers(request_headers)
    resp = _check_headers(response_headers)
    if not isinstance(method, str) or method.upper() not in ("GET", "HEAD"):
        return False, "method"
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599 or status == 304:
        return False, "status"
    req_cc = CacheControl.from_headers(req)
    cc = CacheControl.from_headers(resp)
    understood = status in pol.cacheable_statuses
    if req_cc.no_store:
        return False, "no-store"
    if cc.no_store and not (cc.must_understand and understood):
        return False, "no-store"
    if cc.must_understand and not understood:
        return False, "must-understand"
    if cc.private and not pol.store_private:
        return False, "private"
    if (
        _values(req, "authorization")
        and not pol.store_authorized
        and not (cc.public or cc.s_maxage is not None or cc.must_revalidate)
    ):
        return False, "authorization"
    if _values(resp, "set-cookie") and not pol.store_set_cookie:
        return False, "set-cookie"
    if not understood:
        return False, "status"
    if not (_has_explicit_freshness(cc, resp) or status in HEURISTIC_STATUSES):
        return False, "status"
    length = _first(resp, "content-length")
    if length is not None and length.strip().isdigit() and int(length.strip()) > pol.max_body_bytes:
        return False, "too-large"
    return True, "ok"


# ---------------------------------------------------------------------------------------
# freshness and age


def _date_value(stored: StoredResponse) -> float:
    """The ``Date`` field, or the response time when absent or invalid (RFC 9110 §6.6.1)."""
    parsed = parse_http_date(_first(stored.headers, "date"))
    return stored.response_time if parsed is None else parsed


def freshness_lifetime(
    stored: StoredResponse,
    *,
    heuristic_fraction: float = 0.1,
    heuristic_cap: float = DEFAULT_HEURISTIC_CAP,
) -> float:
    """RFC 9111 §4.2.1 for a shared cache: ``s-maxage``, else ``max-age``, else
    ``Expires - Date`` (an invalid ``Expires`` means already expired), else a heuristic
    ``heuristic_fraction * (Date - Last-Modified)`` capped at ``heuristic_cap`` for
    heuristically cacheable statuses or ``public`` responses (§4.2.2), else 0."""
    cc = stored.cache_control
    if cc.s_maxage is not None:
        return float(cc.s_maxage)
    if cc.max_age is not None:
        return float(cc.max_age)
    expires_lines = _values(stored.headers, "expires")
    if expires_lines:
        expires = parse_http_date(expires_lines[0])
        if expires is None:
            return 0.0
        return max(0.0, expires - _date_value(stored))
    if stored.status in HEURISTIC_STATUSES or cc.public:
        last_modified = parse_http_date(_first(stored.headers, "last-modified"))
        if last_modified is not None:
            span = _date_value(stored) - last_modified
            if span > 0:
                return min(heuristic_cap, heuristic_fraction * span)
    return 0.0


def current_age(stored: StoredResponse, now: float) -> float:
    """RFC 9111 §4.2.3, term by term; never negative (a ``now`` before the response arrived
    counts no resident time)."""
    _finite("now", now)
    age_line = _first(stored.headers, "age")
    age_items = _split_commas(age_line) if age_line is not None else []
    age_value = (_delta_seconds(age_items[0]) or 0) if age_items else 0
    date_value = _date_value(stored)
    apparent_age = max(0.0, stored.response_time - date_value)
    response_delay = stored.response_time - stored.request_time
    corrected_age_value = age_value + response_delay
    corrected_initial_age = max(apparent_age, corrected_age_value)
    resident_time = max(0.0, now - stored.response_time)
    return corrected_initial_age + resident_time


@dataclass(frozen=True)
class Freshness:
    """The verdict of :func:`evaluate`.

    ``age`` is the whole-second current age (what ``Age`` carries), ``ttl`` the lifetime
    minus the exact age (negative when stale), ``fresh`` whether the response satisfies the
    request without the origin (request ``max-age``/``min-fresh``/``max-stale`` included),
    ``action`` what to do, ``stale_if_error_ok`` whether it may be served if the origin
    fails, ``reason`` a short explanation, ``validators`` whether a conditional request is
    possible (``conditional_headers`` is non-empty)."""

    age: int
    ttl: float
    fresh: bool
    action: Action
    stale_if_error_ok: bool
    lifetime: float = 0.0
    reason: str = ""
    validators: bool = False
    stale_by: float = field(default=0.0)


def evaluate(
    stored: StoredResponse,
    request_headers: Headers,
    now: float,
    *,
    strict_s_maxage: bool = True,
    heuristic_fraction: float = 0.1,
    heuristic_cap: float = DEFAULT_HEURISTIC_CAP,
) -> Freshness:
    """Whether ``stored`` can answer a request at ``now`` (RFC 9111 §4.2, §4.2.4, §5.2;
    RFC 5861). ``Vary`` is not checked here: call :func:`vary_matches` first."""
    req = _check_headers(request_headers)
    req_cc = CacheControl.from_headers(req)
    cc = stored.cache_control
    lifetime = freshness_lifetime(stored, heuristic_fraction=heuristic_fraction, heuristic_cap=heuristic_cap)
    age = current_age(stored, now)
    ttl = lifetime - age
    stale_by = max(0.0, -ttl)
    response_fresh = lifetime > age
    validators = bool(conditional_headers(stored))
    no_stale = (
        cc.must_revalidate
        or cc.proxy_revalidate
        or cc.no_cache
        or (strict_s_maxage and cc.s_maxage is not None)
    )

    # request constraints on a response that is otherwise acceptable
    req_max_age = req_cc.max_age
    client_ok = True
    if req_max_age is not None and age > req_max_age:
        client_ok = False
    min_fresh = req_cc.min_fresh
    if min_fresh is not None and ttl < min_fresh:
        client_ok = False

    def sie_window(limit: int | None) -> bool:
        return limit is not None and limit > 0 and stale_by <= limit

    sie_ok = not no_stale and (sie_window(cc.stale_if_error) or sie_window(req_cc.stale_if_error))

    def verdict(action: Action, fresh: bool, reason: str) -> Freshness:
        return Freshness(
            age=min(AGE_CAP, int(age)),
            ttl=ttl,
            fresh=fresh,
            action=action,
            stale_if_error_ok=sie_ok,
            lifetime=lifetime,
            reason=reason,
            validators=validators,
            stale_by=stale_by,
        )

    if cc.no_cache:
        return verdict("revalidate", False, "no-cache")
    if req_cc.no_cache:
        return verdict("revalidate", False, "request-no-cache")
    if req_max_age == 0:
        return verdict("revalidate", False, "request-max-age")
    if response_fresh:
        if client_ok:
            return verdict("hit", True, "fresh")
        return verdict("revalidate", False, "request-max-age" if min_fresh is None else "min-fresh")
    # stale
    max_stale = req_cc.max_stale
    if client_ok and not no_stale and max_stale is not None and stale_by <= max_stale:
        return verdict("hit", True, "max-stale")
    swr = cc.stale_while_revalidate
    if client_ok and not no_stale and swr is not None and swr > 0 and stale_by <= swr:
        return verdict("stale-while-revalidate", False, "stale-while-revalidate")
    return verdict("revalidate", False, "stale")


# ---------------------------------------------------------------------------------------
# validation


def conditional_headers(stored: StoredResponse) -> list[tuple[str, str]]:
    """Request fields that validate ``stored`` (RFC 9111 §4.3.1): ``If-None-Match`` from the
    ``ETag``, ``If-Modified-Since`` from ``Last-Modified``."""
    out: list[tuple[str, str]] = []
    etag = _first(stored.headers, "etag")
    if etag is not None and etag.strip():
        out.append(("If-None-Match", etag.strip()))
    last_modified = _first(stored.headers, "last-modified")
    if last_modified is not None and parse_http_date(last_modified) is not None:
        out.append(("If-Modified-Since", last_modified.strip()))
    return out


_ETAG = re.compile(r'\s*(W/)?"([^"]*)"\s*')


def _parse_etag(value: str) -> tuple[bool, str] | None:
    m = _ETAG.fullmatch(value)
    return (m[1] is not None, m[2]) if m else None


def _parse_etag_list(value: str) -> list[tuple[bool, str]]:
    out: list[tuple[bool, str]] = []
    for item in _split_commas(value):
        tag = _parse_etag(item)
        if tag is not None:
            out.append(tag)
    return out


def not_modified_matches(stored: StoredResponse, response_headers_304: Headers) -> bool:
    """Whether a 304 applies to ``stored`` (RFC 9111 §4.3.4): a strong ``ETag`` in the 304
    must equal the stored one strongly; otherwise a ``Last-Modified`` in both must be equal;
    with neither, the single stored response is the one validated."""
    resp = _check_headers(response_headers_304)
    new_tag = _parse_etag(_first(resp, "etag") or "")
    old_tag = _parse_etag(_first(stored.headers, "etag") or "")
    if new_tag is not None and not new_tag[0]:
        return old_tag is not None and not old_tag[0] and old_tag[1] == new_tag[1]
    new_lm = parse_http_date(_first(resp, "last-modified"))
    old_lm = parse_http_date(_first(stored.headers, "last-modified"))
    if new_lm is not None and old_lm is not None:
        return new_lm == old_lm
    if new_tag is not None and old_tag is not None:
        return new_tag[1] == old_tag[1]
    return True


_NOT_UPDATED = frozenset({"content-length"})


def merge_not_modified(
    stored: StoredResponse,
    response_headers_304: Headers,
    request_time: float,
    response_time: float,
) -> StoredResponse:
    """Freshen ``stored`` with a 304 (RFC 9111 §3.2, §4.3.4): every field the 304 carries
    replaces all stored lines of that name, except ``Content-Length`` and the fields a cache
    never stores; ``Date`` and ``Age`` always come from the 304 (dropped if it has none);
    the times become the revalidation's. Check :func:`not_modified_matches` first."""
    resp = _storable_headers(_check_headers(response_headers_304))
    updates = [(n, v) for n, v in resp if n.lower() not in _NOT_UPDATED]
    replaced = {n.lower() for n, _ in updates} | {"date", "age"}
    kept = [(n, v) for n, v in stored.headers if n.lower() not in replaced]
    return replace(
        stored,
        headers=tuple(kept + updates),
        request_time=_finite("request_time", request_time),
        response_time=_finite("response_time", response_time),
    )


def client_conditional(request_headers: Headers, stored: StoredResponse) -> bool:
    """Whether the client's own precondition lets the cache answer 304 from ``stored``
    (RFC 9110 §13.1.2, §13.1.3, §13.2.2; RFC 9111 §4.3.2). ``If-None-Match`` (``*`` or a
    weak match with the stored ``ETag``) decides when present and ``If-Modified-Since`` is
    then ignored; otherwise a single valid ``If-Modified-Since`` not earlier than the stored
    ``Last-Modified`` (or ``Date``, or the response time) does. Only a stored 200 qualifies;
    the caller checks that the method is GET or HEAD."""
    req = _check_headers(request_headers)
    if stored.status != 200:
        return False
    inm = header_value(req, "if-none-match")
    if inm is not None:
        if inm.strip() == "*":
            return True
        stored_tag = _parse_etag(_first(stored.headers, "etag") or "")
        if stored_tag is None:
            return False
        return any(tag == stored_tag[1] for _, tag in _parse_etag_list(inm))
    ims_lines = _values(req, "if-modified-since")
    if len(ims_lines) != 1:
        return False
    since = parse_http_date(ims_lines[0])
    if since is None:
        return False
    modified = parse_http_date(_first(stored.headers, "last-modified"))
    if modified is None:
        modified = _date_value(stored)
    return modified <= since


# ---------------------------------------------------------------------------------------
# Vary


_WS = re.compile(r"\s+")


def _normalise_accept_encoding(value: str) -> str:
    codings: set[str] = set()
    for item in _split_commas(value):
        name, *params = (p.strip() for p in item.split(";"))
        name = name.lower()
        if not name:
            continue
        refused = False
        for param in params:
            key, _, arg = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    refused = float(arg.strip()) == 0.0
                except ValueError:
                    refused = False
        codings.add(f"{name};q=0" if refused else name)
    return ",".join(sorted(codings))


def vary_values(vary_header: str | None, request_headers: Headers) -> tuple[tuple[str, str], ...] | None:
    """The request's values of the fields ``Vary`` names (RFC 9111 §4.1), as sorted
    ``(lower-case name, normalised value)`` pairs; a field absent from the request is left
    out (absent only matches absent); None for ``Vary: *`` (never matches).

    Normalisation (only where it cannot change the selected representation): field lines
    combined, whitespace runs collapsed; ``Accept-Encoding`` codings lower-cased, de-duplicated
    and sorted, q-values dropped except ``q=0``."""
    req = _check_headers(request_headers)
    if vary_header is None:
        return ()
    names: set[str] = set()
    for item in _split_commas(vary_header):
        if item == "*":
            return None
        names.add(item.lower())
    out: list[tuple[str, str]] = []
    for name in sorted(names):
        value = header_value(req, name)
        if value is None:
            continue
        if name == "accept-encoding":
            value = _normalise_accept_encoding(value)
        else:
            value = _WS.sub(" ", value).strip()
        out.append((name, value))
    return tuple(out)


def vary_matches(stored: StoredResponse, request_headers: Headers) -> bool:
    """Whether a request selects ``stored`` under its ``Vary`` (RFC 9111 §4.1)."""
    selected = vary_values(stored.header("vary"), request_headers)
    return selected is not None and selected == tuple(sorted((n.lower(), v) for n, v in stored.vary))


# ---------------------------------------------------------------------------------------
# cache keys


@dataclass(frozen=True)
class KeyRule:
    """How a request maps to a cache key.

    ``query_drop``: parameters removed (tracking ones by default); ``query_keep_only``: if
    set, only these parameters are kept; ``headers``: request fields whose values become key
    dimensions; ``geo``: ``"country"`` or ``"continent"`` from ``request.cf``;
    ``per_subject``: one entry per authenticated subject (hashed into the key)."""

    query_drop: frozenset[str] = DEFAULT_QUERY_DROP
    query_keep_only: frozenset[str] | None = None
    headers: tuple[str, ...] = ()
    geo: str | None = None
    per_subject: bool = False

    def __post_init__(self) -> None:
        if self.geo not in (None, "country", "continent"):
            raise InvalidInput(f'KeyRule.geo must be None, "country" or "continent", got {self.geo!r}')
        if any(not isinstance(h, str) or not h for h in self.headers):
            raise InvalidInput("KeyRule.headers must be field names")


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")


def _normalise_component(text: str, safe: str) -> str:
    """Percent-encoding normalised (RFC 3986 §6.2.2.2): ``%XX`` of unreserved characters
    decoded, other ``%XX`` upper-cased, characters not allowed in the component encoded."""

    def fix(m: re.Match[str]) -> str:
        ch = chr(int(m[1], 16))
        return ch if ch in _UNRESERVED else "%" + m[1].upper()

    parts = re.split(r"(%[0-9A-Fa-f]{2})", text)
    out: list[str] = []
    for part in parts:
        if _PCT.fullmatch(part):
            out.append(_PCT.sub(fix, part))
        else:
            out.append(quote(part, safe=safe + "".join(_UNRESERVED)))
    return "".join(out)


_PATH_SAFE = "/:@!$&'()*+,;="
_QUERY_SAFE = "/:@!$'()*+,;?"


def _origin(url: str) -> tuple[str, str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"invalid URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise InvalidInput(f"URL must be absolute http(s) with a host: {url!r}")
    host = parts.hostname.lower()
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise InvalidInput(f"invalid host in {url!r}") from exc
    return scheme, host, _DEFAULT_PORTS[scheme] if port is None else port


def _origin_text(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" if port == _DEFAULT_PORTS[scheme] else f"{scheme}://{shown}:{port}"


def _query_name(raw: str) -> str:
    return unquote(raw.partition("=")[0])


def normalize_url(url: str, rule: KeyRule | None = None) -> str:
    """The URL part of a cache key: scheme and host lower-cased, default port dropped, path
    and query percent-encoding normalised (unreserved characters only), empty path ``/``,
    parameters dropped per ``rule`` and sorted by name then value, fragment removed."""
    key_rule = rule or KeyRule()
    if not isinstance(url, str):
        raise InvalidInput("url must be a string")
    scheme, host, port = _origin(url)
    parts = urlsplit(url)
    path = _normalise_component(parts.path or "/", _PATH_SAFE)
    params: list[tuple[str, str]] = []
    for raw in parts.query.split("&"):
        if not raw:
            continue
        name = _query_name(raw)
        if name in key_rule.query_drop:
            continue
        if key_rule.query_keep_only is not None and name not in key_rule.query_keep_only:
            continue
        raw_name, sep, raw_value = raw.partition("=")
        norm = (
            _normalise_component(raw_name, _QUERY_SAFE.replace("=", "")),
            sep + _normalise_component(raw_value, _QUERY_SAFE + "="),
        )
        params.append(norm)
    params.sort()
    query = "&".join(n + v for n, v in params)
    return _origin_text(scheme, host, port) + path + ("?" + query if query else "")


def _dimension(value: str) -> str:
    return quote(_WS.sub(" ", value).strip(), safe=" !#$&'()*+,/:;=?@[]~-._")


def cache_key(
    rule: KeyRule,
    method: str,
    url: str,
    request_headers: Headers,
    cf: Mapping[str, Any] | None = None,
    subject: str | None = None,
) -> str:
    """A deterministic printable cache key under :data:`MAX_KEY_BYTES`.

    ``normalize_url(url, rule)`` then ``|h:<name>=<value>`` per ``rule.headers`` (sorted;
    ``|h:<name>`` alone when absent), ``|geo:<CODE>`` (``XX`` when unknown) and
    ``|sub:<sha256 of the subject, 32 hex>`` (``|sub:-`` when anonymous). GET and HEAD share
    keys; other methods are refused. A key that would be longer becomes
    ``<origin>|sha256:<hex of the full key>``."""
    if not isinstance(method, str) or method.upper() not in ("GET", "HEAD"):
        raise InvalidInput(f"only GET and HEAD responses are cached, not {method!r}")
    req = _check_headers(request_headers)
    key = normalize_url(url, rule)
    for name in sorted({h.lower() for h in rule.headers}):
        value = header_value(req, name)
        key += f"|h:{name}" if value is None else f"|h:{name}={_dimension(value)}"
    if rule.geo is not None:
        raw = (cf or {}).get(rule.geo)
        code = raw.strip().upper() if isinstance(raw, str) and raw.strip() else "XX"
        key += f"|geo:{_dimension(code)}"
    if rule.per_subject:
        if subject is None:
            key += "|sub:-"
        else:
            key += "|sub:" + hashlib.sha256(subject.encode("utf-8")).hexdigest()[:32]
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        origin = _origin_text(*_origin(url))
        key = f"{origin}|sha256:{hashlib.sha256(key.encode('utf-8')).hexdigest()}"
    return key


# ---------------------------------------------------------------------------------------
# invalidation


def invalidation_targets(method: str, status: int, request_url: str, response_headers: Headers) -> list[str]:
    """URLs whose stored responses an unsafe request invalidates (RFC 9111 §4.4): the target
    URI and the same-origin ``Location``/``Content-Location`` (relative references resolved),
    when the method is unsafe and the status is 2xx or 3xx; fragments removed, duplicates
    dropped, order kept. Map them to keys with :func:`normalize_url`."""
    resp = _check_headers(response_headers)
    if not isinstance(method, str) or method.upper() in _SAFE_METHODS:
        return []
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 399:
        return []
    origin = _origin(request_url)
    base = request_url.split("#", 1)[0]
    targets = [base]
    for name in ("location", "content-location"):
        value = _first(resp, name)
        if value is None or not value.strip():
            continue
        resolved = urljoin(base, value.strip()).split("#", 1)[0]
        try:
            same = _origin(resolved) == origin
        except InvalidInput:
            same = False
        if same and resolved not in targets:
            targets.append(resolved)
    return targets


# ---------------------------------------------------------------------------------------
# response decoration


def age_header(age: float) -> str:
    """``Age`` value: whole seconds, never negative, capped at 2**31 (RFC 9111 §5.1)."""
    if isinstance(age, bool) or not isinstance(age, int | float) or math.isnan(age):
        raise InvalidInput(f"age must be a number, got {age!r}")
    if age >= AGE_CAP:
        return str(AGE_CAP)
    return str(max(0, math.floor(age)))


_SF_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")


def _sf_item(value: str) -> str:
    if _SF_TOKEN.fullmatch(value):
        return value
    if any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
        raise InvalidInput(f"Cache-Status value {value!r} must be printable ASCII")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cache_status(
    hit: bool,
    fwd: str | None = None,
    ttl: float | None = None,
    stored: bool = False,
    detail: str | None = None,
    name: str = "edge-kv",
    *,
    fwd_status: int | None = None,
    collapsed: bool = False,
    key: str | None = None,
) -> str:
    """One ``Cache-Status`` member (RFC 9211): ``edge-kv; hit; ttl=12`` or
    ``edge-kv; fwd=stale; fwd-status=200; stored``. ``ttl`` is floored to whole seconds (a
    negative ttl marks a stale hit); ``hit`` and ``fwd`` exclude each other."""
    if hit and fwd is not None:
        raise InvalidInput("Cache-Status cannot carry both hit and fwd")
    if fwd is not None and fwd not in CACHE_STATUS_FWD:
        raise InvalidInput(f"Cache-Status fwd must be one of {sorted(CACHE_STATUS_FWD)}, got {fwd!r}")
    parts = [_sf_item(name)]
    if hit:
        parts.append("hit")
    if fwd is not None:
        parts.append(f"fwd={fwd}")
    if fwd_status is not None:
        if isinstance(fwd_status, bool) or not isinstance(fwd_status, int) or not 100 <= fwd_status <= 599:
            raise InvalidInput(f"fwd-status must be an HTTP status, got {fwd_status!r}")
        parts.append(f"fwd-status={fwd_status}")
    if ttl is not None:
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
            raise InvalidInput(f"ttl must be a finite number, got {ttl!r}")
        parts.append(f"ttl={max(-999_999_999_999_999, min(999_999_999_999_999, math.floor(ttl)))}")
    if stored:
        parts.append("stored")
    if collapsed:
        parts.append("collapsed")
    if key is not None:
        parts.append(f"key={_sf_item(key)}")
    if detail is not None:
        parts.append(f"detail={_sf_item(detail)}")
    return "; ".join(parts)


_LABELS: dict[str, str] = {
    "hit": "HIT",
    "miss": "MISS",
    "stale": "STALE",
    "revalidated": "REVALIDATED",
    "expired": "EXPIRED",
    "bypass": "BYPASS",
    "error-stale": "ERROR-STALE",
}


def x_cache_label(outcome: str) -> str:
    """The ``X-Cache``-style label of an outcome: ``hit`` (fresh), ``miss`` (nothing usable
    stored), ``stale`` (served stale while revalidating), ``revalidated`` (a 304 freshened
    the stored copy), ``expired`` (stale copy replaced by a full response), ``bypass`` (not
    cacheable), ``error-stale`` (stale served because the origin failed)."""
    try:
        return _LABELS[outcome]
    except KeyError:
        raise InvalidInput(f"unknown cache outcome {outcome!r}; one of {sorted(_LABELS)}") from None


def cache_status_for(
    outcome: str,
    *,
    ttl: float | None = None,
    stored: bool = False,
    fwd_status: int | None = None,
    name: str = "edge-kv",
) -> str:
    """``Cache-Status`` for an outcome of :func:`x_cache_label`: ``hit``/``stale`` are hits
    (a stale one has a negative ttl, detail ``stale-while-revalidate``); ``miss`` is
    ``fwd=uri-miss``; ``revalidated``/``expired`` are ``fwd=stale``; ``bypass`` is
    ``fwd=bypass``; ``error-stale`` is ``fwd=stale`` with detail ``stale-if-error``."""
    x_cache_label(outcome)
    if outcome == "hit":
        return cache_status(True, ttl=ttl, name=name)
    if outcome == "stale":
        return cache_status(True, ttl=ttl, detail="stale-while-revalidate", name=name)
    if outcome == "miss":
        return cache_status(False, "uri-miss", ttl=ttl, stored=stored, name=name, fwd_status=fwd_status)
    if outcome in ("revalidated", "expired"):
        return cache_status(False, "stale", ttl=ttl, stored=stored, name=name, fwd_status=fwd_status)
    if outcome == "bypass":
        return cache_status(False, "bypass", name=name, fwd_status=fwd_status)
    return cache_status(False, "stale", ttl=ttl, detail="stale-if-error", name=name, fwd_status=fwd_status)
