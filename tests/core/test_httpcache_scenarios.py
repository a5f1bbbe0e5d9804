"""Scenario table for the shared HTTP cache, written from RFC 9111, RFC 5861 and RFC 9211.

Every row asserts exact numbers or verdicts. Times are whole seconds around ``T0`` (the
moment the response arrived) so ages and lifetimes are exact.

Stdlib + pytest + hypothesis only: runs on CPython and again inside Pyodide."""

from __future__ import annotations

import math
from typing import Any

import pytest

from edge_kv.core.errors import InvalidInput
from edge_kv.core.httpcache import (
    CacheControl,
    KeyRule,
    StoredResponse,
    StorePolicy,
    cache_key,
    cache_status,
    cache_status_for,
    client_conditional,
    current_age,
    evaluate,
    format_http_date,
    freshness_lifetime,
    invalidation_targets,
    storable,
    vary_matches,
    vary_values,
    x_cache_label,
)

T0 = 1_700_000_000.0
H = list[tuple[str, str]]


def date(offset: float) -> str:
    return format_http_date(T0 + offset)


def stored(
    headers: H, status: int = 200, request_time: float = T0, response_time: float = T0
) -> StoredResponse:
    return StoredResponse(status, tuple(headers), request_time, response_time)


# ---------------------------------------------------------------------------------------
# freshness lifetime, RFC 9111 §4.2.1 / §4.2.2

LIFETIME_ROWS: list[tuple[str, int, H, float]] = [
    ("max-age", 200, [("Cache-Control", "max-age=60")], 60),
    ("s-maxage beats max-age", 200, [("Cache-Control", "max-age=60, s-maxage=30")], 30),
    ("s-maxage beats max-age (larger)", 200, [("Cache-Control", "s-maxage=600, max-age=60")], 600),
    (
        "max-age beats Expires",
        200,
        [("Cache-Control", "max-age=60"), ("Date", date(0)), ("Expires", date(3600))],
        60,
    ),
    (
        "s-maxage beats Expires",
        200,
        [("Cache-Control", "s-maxage=5"), ("Date", date(0)), ("Expires", date(3600))],
        5,
    ),
    ("Expires - Date", 200, [("Date", date(-10)), ("Expires", date(110))], 120),
    ("Expires without Date uses response_time", 200, [("Expires", date(100))], 100),
    ("Expires invalid '0' is already expired", 200, [("Date", date(0)), ("Expires", "0")], 0),
    ("Expires in the past", 200, [("Date", date(0)), ("Expires", date(-60))], 0),
    (
        "Expires invalid beats heuristic",
        200,
        [("Date", date(0)), ("Expires", "never"), ("Last-Modified", date(-10_000))],
        0,
    ),
    ("first Expires line wins", 200, [("Date", date(0)), ("Expires", date(50)), ("Expires", date(500))], 50),
    (
        "obsolete RFC 850 Expires",
        200,
        [("Date", "Sunday, 06-Nov-94 08:49:37 GMT"), ("Expires", "Sunday, 06-Nov-94 08:50:37 GMT")],
        60,
    ),
    (
        "asctime Expires",
        200,
        [("Date", "Sun Nov  6 08:49:37 1994"), ("Expires", "Sun Nov  6 08:49:47 1994")],
        10,
    ),
    ("heuristic 10% of Date - Last-Modified", 200, [("Date", date(0)), ("Last-Modified", date(-1000))], 100),
    ("heuristic without Date uses response_time", 200, [("Last-Modified", date(-500))], 50),
    ("heuristic capped at a day", 200, [("Date", date(0)), ("Last-Modified", date(-10_000_000))], 86_400),
    ("heuristic for 404", 404, [("Date", date(0)), ("Last-Modified", date(-1000))], 100),
    ("heuristic for 301", 301, [("Date", date(0)), ("Last-Modified", date(-1000))], 100),
    ("no heuristic for 302", 302, [("Date", date(0)), ("Last-Modified", date(-1000))], 0),
    ("no heuristic for 500", 500, [("Date", date(0)), ("Last-Modified", date(-1000))], 0),
    (
        "public allows heuristic for 302",
        302,
        [("Cache-Control", "public"), ("Date", date(0)), ("Last-Modified", date(-1000))],
        100,
    ),
    ("Last-Modified after Date", 200, [("Date", date(0)), ("Last-Modified", date(100))], 0),
    ("invalid Last-Modified", 200, [("Date", date(0)), ("Last-Modified", "yesterday")], 0),
    ("nothing", 200, [], 0),
    ("max-age=abc counts as stale", 200, [("Cache-Control", "max-age=abc"), ("Expires", date(100))], 0),
    ("max-age=-1 counts as stale", 200, [("Cache-Control", "max-age=-1")], 0),
    ("duplicate max-age: most restrictive", 200, [("Cache-Control", "max-age=60, max-age=30")], 30),
    ("duplicate across lines", 200, [("Cache-Control", "max-age=30"), ("Cache-Control", "max-age=60")], 30),
    ('quoted max-age="60"', 200, [("Cache-Control", 'max-age="60"')], 60),
    ("invalid s-maxage beats max-age", 200, [("Cache-Control", "s-maxage=x, max-age=60")], 0),
    ("overflowing max-age is 2**31", 200, [("Cache-Control", "max-age=99999999999999")], 2**31),
    ("upper-case directive", 200, [("CACHE-CONTROL", "MAX-AGE=45")], 45),
    ("no-cache does not change the lifetime", 200, [("Cache-Control", "no-cache, max-age=60")], 60),
    ("invalid Date falls back to response_time", 200, [("Date", "garbage"), ("Expires", date(30))], 30),
    ("31 Feb is not a date", 200, [("Date", date(0)), ("Expires", "Sat, 31 Feb 2024 00:00:00 GMT")], 0),
]


@pytest.mark.parametrize(
    ("status", "headers", "expected"), [r[1:] for r in LIFETIME_ROWS], ids=[r[0] for r in LIFETIME_ROWS]
)
def test_freshness_lifetime(status: int, headers: H, expected: float) -> None:
    assert freshness_lifetime(stored(headers, status)) == expected


def test_heuristic_parameters() -> None:
    s = stored([("Date", date(0)), ("Last-Modified", date(-10_000))])
    assert freshness_lifetime(s, heuristic_fraction=0.5, heuristic_cap=1e9) == 5000
    assert freshness_lifetime(s, heuristic_cap=60) == 60


# ---------------------------------------------------------------------------------------
# current age, RFC 9111 §4.2.3

# (name, headers, request_time offset, response_time offset, now offset, expected age)
AGE_ROWS: list[tuple[str, H, float, float, float, float]] = [
    # apparent_age = 0 - (-1) = 1; response_delay = 2; corrected_age_value = 10 + 2 = 12;
    # corrected_initial_age = max(1, 12) = 12; resident_time = 5  ->  17
    ("worked example with Age", [("Date", date(-1)), ("Age", "10")], -2, 0, 5, 17),
    # apparent_age = 100 beats corrected_age_value = 0 + 1
    ("apparent age dominates", [("Date", date(-100))], -1, 0, 0, 100),
    # Date ahead of the cache's clock: apparent_age clamps to 0, delay 3, resident 7
    ("Date in the future", [("Date", date(30))], -3, 0, 7, 10),
    ("no Date: response_time", [], 0, 0, 42, 42),
    ("Age only", [("Age", "30")], 0, 0, 0, 30),
    ("Age plus delay plus residence", [("Age", "30"), ("Date", date(0))], -4, 0, 6, 40),
    ("Age: first member of a list", [("Age", "5, 10")], 0, 0, 0, 5),
    ("Age: first field line", [("Age", "7"), ("Age", "100")], 0, 0, 0, 7),
    ("invalid Age is 0", [("Age", "abc")], 0, 0, 3, 3),
    ("negative Age is invalid", [("Age", "-50")], 0, 0, 3, 3),
    ("huge Age capped", [("Age", "99999999999999")], 0, 0, 0, 2**31),
    ("now before arrival: no resident time", [("Age", "4")], 0, 0, -50, 4),
    ("stored long ago", [("Date", date(-2))], -1, 0, 3600, 3602),
]


@pytest.mark.parametrize(
    ("headers", "req_t", "resp_t", "now", "expected"), [r[1:] for r in AGE_ROWS], ids=[r[0] for r in AGE_ROWS]
)
def test_current_age(headers: H, req_t: float, resp_t: float, now: float, expected: float) -> None:
    s = stored(headers, request_time=T0 + req_t, response_time=T0 + resp_t)
    assert current_age(s, T0 + now) == expected


# ---------------------------------------------------------------------------------------
# evaluate: freshness, no-cache, request directives, RFC 5861 windows

# (name, response headers, request headers, now offset, action, fresh, age, ttl, stale_if_error_ok)
EVAL_ROWS: list[tuple[str, H, H, float, str, bool, int, float, bool]] = [
    ("fresh", [("Cache-Control", "max-age=60")], [], 10, "hit", True, 10, 50, False),
    ("just before expiry", [("Cache-Control", "max-age=60")], [], 59.5, "hit", True, 59, 0.5, False),
    (
        "at expiry is stale (lifetime > age)",
        [("Cache-Control", "max-age=60")],
        [],
        60,
        "revalidate",
        False,
        60,
        0,
        False,
    ),
    ("stale", [("Cache-Control", "max-age=60")], [], 61, "revalidate", False, 61, -1, False),
    (
        "Age counts",
        [("Cache-Control", "max-age=60"), ("Age", "55")],
        [],
        10,
        "revalidate",
        False,
        65,
        -5,
        False,
    ),
    ("Expires-based", [("Date", date(0)), ("Expires", date(30))], [], 29, "hit", True, 29, 1, False),
    ("heuristic", [("Date", date(0)), ("Last-Modified", date(-1000))], [], 99, "hit", True, 99, 1, False),
    ("no freshness: revalidate", [("ETag", '"a"')], [], 0, "revalidate", False, 0, 0, False),
    (
        "immutable is still bounded by max-age",
        [("Cache-Control", "max-age=60, immutable")],
        [],
        61,
        "revalidate",
        False,
        61,
        -1,
        False,
    ),
    # no-cache
    (
        "response no-cache while fresh",
        [("Cache-Control", "no-cache, max-age=600")],
        [],
        1,
        "revalidate",
        False,
        1,
        599,
        False,
    ),
    (
        'response no-cache="Set-Cookie" is unqualified',
        [("Cache-Control", 'no-cache="Set-Cookie", max-age=600')],
        [],
        1,
        "revalidate",
        False,
        1,
        599,
        False,
    ),
    (
        "request no-cache",
        [("Cache-Control", "max-age=600")],
        [("Cache-Control", "no-cache")],
        1,
        "revalidate",
        False,
        1,
        599,
        False,
    ),
    (
        "request max-age=0",
        [("Cache-Control", "max-age=600")],
        [("Cache-Control", "max-age=0")],
        0,
        "revalidate",
        False,
        0,
        600,
        False,
    ),
    # request max-age / min-fresh / max-stale (§5.2.1)
    (
        "request max-age satisfied",
        [("Cache-Control", "max-age=600")],
        [("Cache-Control", "max-age=30")],
        30,
        "hit",
        True,
        30,
        570,
        False,
    ),
    (
        "request max-age exceeded",
        [("Cache-Control", "max-age=600")],
        [("Cache-Control", "max-age=30")],
        31,
        "revalidate",
        False,
        31,
        569,
        False,
    ),
    (
        "min-fresh satisfied",
        [("Cache-Control", "max-age=60")],
        [("Cache-Control", "min-fresh=20")],
        40,
        "hit",
        True,
        40,
        20,
        False,
    ),
    (
        "min-fresh not satisfied",
        [("Cache-Control", "max-age=60")],
        [("Cache-Control", "min-fresh=20")],
        41,
        "revalidate",
        False,
        41,
        19,
        False,
    ),
    (
        "max-stale within",
        [("Cache-Control", "max-age=60")],
        [("Cache-Control", "max-stale=10")],
        70,
        "hit",
        True,
        70,
        -10,
        False,
    ),
    (
        "max-stale exceeded",
        [("Cache-Control", "max-age=60")],
        [("Cache-Control", "max-stale=10")],
        71,
        "revalidate",
        False,
        71,
        -11,
        False,
    ),
    (
        "bare max-stale: any staleness",
        [("Cache-Control", "max-age=60")],
        [("Cache-Control", "max-stale")],
        10**6,
        "hit",
        True,
        10**6,
        60 - 10**6,
        False,
    ),
    (
        "max-stale vs must-revalidate",
        [("Cache-Control", "max-age=60, must-revalidate")],
        [("Cache-Control", "max-stale")],
        61,
        "revalidate",
        False,
        61,
        -1,
        False,
    ),
    (
        "max-stale vs proxy-revalidate",
        [("Cache-Control", "max-age=60, proxy-revalidate")],
        [("Cache-Control", "max-stale=100")],
        61,
        "revalidate",
        False,
        61,
        -1,
        False,
    ),
    (
        "max-stale vs no-cache",
        [("Cache-Control", "max-age=60, no-cache")],
        [("Cache-Control", "max-stale")],
        61,
        "revalidate",
        False,
        61,
        -1,
        False,
    ),
    # stale-while-revalidate (RFC 5861 §3): closed window [lifetime, lifetime + N]
    (
        "SWR: fresh is a plain hit",
        [("Cache-Control", "max-age=60, stale-while-revalidate=30")],
        [],
        59,
        "hit",
        True,
        59,
        1,
        False,
    ),
    (
        "SWR: at expiry",
        [("Cache-Control", "max-age=60, stale-while-revalidate=30")],
        [],
        60,
        "stale-while-revalidate",
        False,
        60,
        0,
        False,
    ),
    (
        "SWR: last second",
        [("Cache-Control", "max-age=60, stale-while-revalidate=30")],
        [],
        90,
        "stale-while-revalidate",
        False,
        90,
        -30,
        False,
    ),
    (
        "SWR: window over",
        [("Cache-Control", "max-age=60, stale-while-revalidate=30")],
        [],
        90.5,
        "revalidate",
        False,
        90,
        -30.5,
        False,
    ),
    (
        "SWR=0 is no window",
        [("Cache-Control", "max-age=60, stale-while-revalidate=0")],
        [],
        60,
        "revalidate",
        False,
        60,
        0,
        False,
    ),
    (
        "SWR invalid ignored",
        [("Cache-Control", "max-age=60, stale-while-revalidate=soon")],
        [],
        61,
        "revalidate",
        False,
        61,
        -1,
        False,
    ),
    (
        "SWR vs must-revalidate",
        [("Cache-Control", "max-age=60, must-revalidate, stale-while-revalidate=30")],
        [],
        61,
        "revalidate",
        False,
        61,
        -1,
        False,
    ),
    (
        "SWR vs proxy-revalidate",
        [("Cache-Control", "max-age=60, proxy-revalidate, stale-while-revalidate=30")],
        [],
        61,
        "revalidate",
        False,
        61,
        -1,
        False,
    ),
    (
        "SWR vs s-maxage (implies proxy-revalidate)",
        [("Cache-Control", "s-maxage=60, stale-while-revalidate=30")],
        [],
        61,
        "revalidate",
        False,
        61,
        -1,
        False,
    ),
    (
        "SWR vs request max-age",
        [("Cache-Control", "max-age=60, stale-while-revalidate=30")],
        [("Cache-Control", "max-age=60")],
        61,
        "revalidate",
        False,
        61,
        -1,
        False,
    ),
    (
        "SWR with Expires",
        [("Cache-Control", "stale-while-revalidate=30"), ("Date", date(0)), ("Expires", date(10))],
        [],
        25,
        "stale-while-revalidate",
        False,
        25,
        -15,
        False,
    ),
    # stale-if-error (RFC 5861 §4), response and request directive
    (
        "SIE response: fresh is within",
        [("Cache-Control", "max-age=60, stale-if-error=100")],
        [],
        30,
        "hit",
        True,
        30,
        30,
        True,
    ),
    (
        "SIE response: last second",
        [("Cache-Control", "max-age=60, stale-if-error=100")],
        [],
        160,
        "revalidate",
        False,
        160,
        -100,
        True,
    ),
    (
        "SIE response: over",
        [("Cache-Control", "max-age=60, stale-if-error=100")],
        [],
        161,
        "revalidate",
        False,
        161,
        -101,
        False,
    ),
    (
        "SIE request: within",
        [("Cache-Control", "max-age=60")],
        [("Cache-Control", "stale-if-error=50")],
        110,
        "revalidate",
        False,
        110,
        -50,
        True,
    ),
    (
        "SIE request: over",
        [("Cache-Control", "max-age=60")],
        [("Cache-Control", "stale-if-error=50")],
        111,
        "revalidate",
        False,
        111,
        -51,
        False,
    ),
    (
        "SIE request longer than response",
        [("Cache-Control", "max-age=60, stale-if-error=10")],
        [("Cache-Control", "stale-if-error=50")],
        100,
        "revalidate",
        False,
        100,
        -40,
        True,
    ),
    (
        "SIE vs must-revalidate: never stale, not even on error",
        [("Cache-Control", "max-age=60, must-revalidate, stale-if-error=1000")],
        [],
        61,
        "revalidate",
        False,
        61,
        -1,
        False,
    ),
    (
        "SIE request vs must-revalidate",
        [("Cache-Control", "max-age=60, must-revalidate")],
        [("Cache-Control", "stale-if-error=1000")],
        61,
        "revalidate",
        False,
        61,
        -1,
        False,
    ),
    (
        "SIE vs proxy-revalidate",
        [("Cache-Control", "max-age=60, proxy-revalidate, stale-if-error=1000")],
        [],
        61,
        "revalidate",
        False,
        61,
        -1,
        False,
    ),
    (
        "SIE vs no-cache",
        [("Cache-Control", "no-cache, stale-if-error=1000")],
        [],
        5,
        "revalidate",
        False,
        5,
        -5,
        False,
    ),
    (
        "SIE and SWR together",
        [("Cache-Control", "max-age=10, stale-while-revalidate=5, stale-if-error=60")],
        [],
        20,
        "revalidate",
        False,
        20,
        -10,
        True,
    ),
]


@pytest.mark.parametrize(
    ("response", "request_headers", "now", "action", "fresh", "age", "ttl", "sie"),
    [r[1:] for r in EVAL_ROWS],
    ids=[r[0] for r in EVAL_ROWS],
)
def test_evaluate(
    response: H, request_headers: H, now: float, action: str, fresh: bool, age: int, ttl: float, sie: bool
) -> None:
    verdict = evaluate(stored(response), request_headers, T0 + now)
    assert (verdict.action, verdict.fresh, verdict.age, verdict.ttl, verdict.stale_if_error_ok) == (
        action,
        fresh,
        age,
        ttl,
        sie,
    )


def test_s_maxage_swr_when_not_strict() -> None:
    s = stored([("Cache-Control", "s-maxage=60, stale-while-revalidate=30, stale-if-error=30")])
    strict = evaluate(s, [], T0 + 70)
    relaxed = evaluate(s, [], T0 + 70, strict_s_maxage=False)
    assert (strict.action, strict.stale_if_error_ok) == ("revalidate", False)
    assert (relaxed.action, relaxed.stale_if_error_ok) == ("stale-while-revalidate", True)


def test_evaluate_reports_validators_and_lifetime() -> None:
    with_tag = evaluate(stored([("Cache-Control", "max-age=5"), ("ETag", '"x"')]), [], T0 + 9)
    without = evaluate(stored([("Cache-Control", "max-age=5")]), [], T0 + 9)
    assert (with_tag.validators, with_tag.lifetime, with_tag.stale_by) == (True, 5.0, 4.0)
    assert without.validators is False


# ---------------------------------------------------------------------------------------
# storing, RFC 9111 §3 and §3.5

CC = "Cache-Control"
# (name, method, status, request headers, response headers, policy, expected)
STORE_ROWS: list[tuple[str, str, int, H, H, StorePolicy | None, tuple[bool, str]]] = [
    ("GET 200 max-age", "GET", 200, [], [(CC, "max-age=60")], None, (True, "ok")),
    ("HEAD 200", "HEAD", 200, [], [(CC, "max-age=60")], None, (True, "ok")),
    ("lower-case method", "get", 200, [], [(CC, "max-age=60")], None, (True, "ok")),
    ("POST", "POST", 200, [], [(CC, "max-age=60")], None, (False, "method")),
    ("PUT", "PUT", 200, [], [(CC, "max-age=60")], None, (False, "method")),
    ("request no-store", "GET", 200, [(CC, "no-store")], [(CC, "max-age=60")], None, (False, "no-store")),
    ("response no-store", "GET", 200, [], [(CC, "no-store, max-age=60")], None, (False, "no-store")),
    (
        "must-understand with known status overrides no-store",
        "GET",
        200,
        [],
        [(CC, "must-understand, no-store, max-age=60")],
        None,
        (True, "ok"),
    ),
    (
        "must-understand with unknown status",
        "GET",
        299,
        [],
        [(CC, "must-understand, max-age=60")],
        None,
        (False, "must-understand"),
    ),
    ("private", "GET", 200, [], [(CC, "private, max-age=60")], None, (False, "private")),
    (
        "qualified private is unqualified",
        "GET",
        200,
        [],
        [(CC, 'private="X-User", max-age=60')],
        None,
        (False, "private"),
    ),
    (
        "private stored by policy",
        "GET",
        200,
        [],
        [(CC, "private, max-age=60")],
        StorePolicy(store_private=True),
        (True, "ok"),
    ),
    (
        "Authorization without permission",
        "GET",
        200,
        [("Authorization", "Bearer x")],
        [(CC, "max-age=60")],
        None,
        (False, "authorization"),
    ),
    (
        "Authorization + public",
        "GET",
        200,
        [("Authorization", "Bearer x")],
        [(CC, "public, max-age=60")],
        None,
        (True, "ok"),
    ),
    (
        "Authorization + s-maxage",
        "GET",
        200,
        [("authorization", "Bearer x")],
        [(CC, "s-maxage=60")],
        None,
        (True, "ok"),
    ),
    (
        "Authorization + must-revalidate",
        "GET",
        200,
        [("Authorization", "Bearer x")],
        [(CC, "must-revalidate, max-age=60")],
        None,
        (True, "ok"),
    ),
    (
        "Authorization stored by policy",
        "GET",
        200,
        [("Authorization", "Bearer x")],
        [(CC, "max-age=60")],
        StorePolicy(store_authorized=True),
        (True, "ok"),
    ),
    (
        "Authorization + public but private wins",
        "GET",
        200,
        [("Authorization", "x")],
        [(CC, "public, private")],
        None,
        (False, "private"),
    ),
    ("Set-Cookie", "GET", 200, [], [(CC, "max-age=60"), ("Set-Cookie", "a=b")], None, (False, "set-cookie")),
    (
        "Set-Cookie stored by policy",
        "GET",
        200,
        [],
        [(CC, "max-age=60"), ("Set-Cookie", "a=b")],
        StorePolicy(store_set_cookie=True),
        (True, "ok"),
    ),
    ("200 without freshness: heuristically cacheable", "GET", 200, [], [], None, (True, "ok")),
    ("404 heuristically cacheable", "GET", 404, [], [], None, (True, "ok")),
    ("410 heuristically cacheable", "GET", 410, [], [], None, (True, "ok")),
    ("302 not in the default set", "GET", 302, [], [(CC, "max-age=60")], None, (False, "status")),
    (
        "302 allowed with explicit freshness",
        "GET",
        302,
        [],
        [(CC, "max-age=60")],
        StorePolicy(cacheable_statuses=frozenset({200, 302})),
        (True, "ok"),
    ),
    (
        "302 allowed by Expires",
        "GET",
        302,
        [],
        [("Expires", date(60))],
        StorePolicy(cacheable_statuses=frozenset({302})),
        (True, "ok"),
    ),
    (
        "302 allowed but not heuristically cacheable",
        "GET",
        302,
        [],
        [],
        StorePolicy(cacheable_statuses=frozenset({200, 302})),
        (False, "status"),
    ),
    ("500 with max-age", "GET", 500, [], [(CC, "max-age=60")], None, (False, "status")),
    ("304 never stored", "GET", 304, [], [(CC, "max-age=60")], None, (False, "status")),
    ("1xx never stored", "GET", 103, [], [], None, (False, "status")),
    ("Vary: * is storable", "GET", 200, [], [(CC, "max-age=60"), ("Vary", "*")], None, (True, "ok")),
    (
        "too large",
        "GET",
        200,
        [],
        [(CC, "max-age=60"), ("Content-Length", "2000")],
        StorePolicy(max_body_bytes=1000),
        (False, "too-large"),
    ),
    (
        "exactly the limit",
        "GET",
        200,
        [],
        [(CC, "max-age=60"), ("Content-Length", "1000")],
        StorePolicy(max_body_bytes=1000),
        (True, "ok"),
    ),
    ("no-cache is storable", "GET", 200, [], [(CC, "no-cache")], None, (True, "ok")),
]


@pytest.mark.parametrize(
    ("method", "status", "req", "resp", "policy", "expected"),
    [r[1:] for r in STORE_ROWS],
    ids=[r[0] for r in STORE_ROWS],
)
def test_storable(
    method: str, status: int, req: H, resp: H, policy: StorePolicy | None, expected: tuple[bool, str]
) -> None:
    assert storable(method, status, req, resp, policy) == expected


# ---------------------------------------------------------------------------------------
# Vary, RFC 9111 §4.1

AE = "Accept-Encoding"
# (name, Vary, request headers at store time, later request headers, matches)
VARY_ROWS: list[tuple[str, str | None, H, H, bool]] = [
    ("no Vary", None, [(AE, "gzip")], [(AE, "br")], True),
    ("same Accept-Encoding", "Accept-Encoding", [(AE, "gzip, br")], [(AE, "gzip, br")], True),
    ("order-insensitive", "Accept-Encoding", [(AE, "gzip, br")], [(AE, "br,gzip")], True),
    ("case and whitespace", "accept-encoding", [(AE, "gzip, br")], [(AE, " BR ,   GZIP ")], True),
    (
        "non-zero q-values dropped",
        "Accept-Encoding",
        [(AE, "gzip, br")],
        [(AE, "gzip;q=1.0, br;q=0.5")],
        True,
    ),
    ("q=0 kept", "Accept-Encoding", [(AE, "gzip, br")], [(AE, "gzip, br, identity;q=0")], False),
    ("q=0 both sides", "Accept-Encoding", [(AE, "gzip;q=0")], [(AE, "GZIP; Q=0.000")], True),
    ("different coding", "Accept-Encoding", [(AE, "gzip, br")], [(AE, "gzip")], False),
    ("split field lines", "Accept-Encoding", [(AE, "gzip, br")], [(AE, "br"), (AE, "gzip")], True),
    ("absent matches absent", "Accept-Encoding", [], [], True),
    ("absent does not match empty", "Accept-Encoding", [], [(AE, "")], False),
    ("absent does not match present", "Accept-Encoding", [], [(AE, "gzip")], False),
    ("Vary: *", "*", [], [], False),
    ("Vary list with *", "Accept-Encoding, *", [(AE, "gzip")], [(AE, "gzip")], False),
    (
        "two fields",
        "Accept-Language, Accept-Encoding",
        [("Accept-Language", "en"), (AE, "gzip")],
        [(AE, "gzip"), ("accept-language", "en")],
        True,
    ),
    (
        "two fields, one differs",
        "Accept-Language, Accept-Encoding",
        [("Accept-Language", "en"), (AE, "gzip")],
        [(AE, "gzip"), ("Accept-Language", "de")],
        False,
    ),
    (
        "whitespace collapsed",
        "Accept-Language",
        [("Accept-Language", "en,  fr")],
        [("Accept-Language", " en, fr ")],
        True,
    ),
    (
        "comma spacing is significant",
        "Accept-Language",
        [("Accept-Language", "en,fr")],
        [("Accept-Language", "en, fr")],
        False,
    ),
    ("whitespace runs collapsed", "X-Thing", [("X-Thing", "a   b")], [("X-Thing", "a b")], True),
    (
        "other fields are case-sensitive",
        "Accept-Language",
        [("Accept-Language", "en")],
        [("Accept-Language", "EN")],
        False,
    ),
]


@pytest.mark.parametrize(
    ("vary", "first", "later", "matches"), [r[1:] for r in VARY_ROWS], ids=[r[0] for r in VARY_ROWS]
)
def test_vary(vary: str | None, first: H, later: H, matches: bool) -> None:
    headers: H = [(CC, "max-age=60")] + ([("Vary", vary)] if vary is not None else [])
    s = StoredResponse.from_exchange(200, headers, first, T0, T0)
    assert vary_matches(s, later) is matches


def test_vary_values_exact() -> None:
    assert vary_values("Accept-Encoding", [(AE, "gzip;q=0.8, BR, deflate, identity;q=0")]) == (
        ("accept-encoding", "br,deflate,gzip,identity;q=0"),
    )
    assert vary_values("Accept-Encoding, accept-encoding", [(AE, "gzip")]) == (("accept-encoding", "gzip"),)
    assert vary_values("X-A, X-B", [("x-b", " 1 "), ("X-A", "2\t 3")]) == (("x-a", "2 3"), ("x-b", "1"))
    assert vary_values("*", [(AE, "gzip")]) is None
    assert vary_values(None, [(AE, "gzip")]) == ()


# ---------------------------------------------------------------------------------------
# client conditionals, RFC 9110 §13.1.1-3 and §13.2.2

ETAGGED: H = [("ETag", '"v1"'), ("Last-Modified", date(-1000)), ("Date", date(0))]
WEAK: H = [("ETag", 'W/"v1"'), ("Date", date(0))]
# (name, stored headers, stored status, request headers, expected)
COND_ROWS: list[tuple[str, H, int, H, bool]] = [
    ("INM *", ETAGGED, 200, [("If-None-Match", "*")], True),
    ("INM * without an ETag", [("Date", date(0))], 200, [("If-None-Match", "*")], True),
    ("INM strong equal", ETAGGED, 200, [("If-None-Match", '"v1"')], True),
    ("INM weak vs strong (weak comparison)", ETAGGED, 200, [("If-None-Match", 'W/"v1"')], True),
    ("INM strong vs stored weak", WEAK, 200, [("If-None-Match", '"v1"')], True),
    ("INM list", ETAGGED, 200, [("If-None-Match", '"v0", W/"v1"')], True),
    ("INM other tag", ETAGGED, 200, [("If-None-Match", '"v2"')], False),
    ("INM case-sensitive", ETAGGED, 200, [("If-None-Match", '"V1"')], False),
    ("INM without a stored ETag", [("Last-Modified", date(-10))], 200, [("If-None-Match", '"v1"')], False),
    (
        "INM present: IMS ignored",
        ETAGGED,
        200,
        [("If-None-Match", '"v2"'), ("If-Modified-Since", date(0))],
        False,
    ),
    ("IMS equal to Last-Modified", ETAGGED, 200, [("If-Modified-Since", date(-1000))], True),
    ("IMS after Last-Modified", ETAGGED, 200, [("If-Modified-Since", date(-1))], True),
    ("IMS before Last-Modified", ETAGGED, 200, [("If-Modified-Since", date(-1001))], False),
    ("IMS invalid", ETAGGED, 200, [("If-Modified-Since", "last tuesday")], False),
    (
        "IMS with two members",
        ETAGGED,
        200,
        [("If-Modified-Since", date(0)), ("If-Modified-Since", date(0))],
        False,
    ),
    (
        "IMS without Last-Modified uses Date",
        [("Date", date(-50))],
        200,
        [("If-Modified-Since", date(-50))],
        True,
    ),
    ("IMS before Date", [("Date", date(-50))], 200, [("If-Modified-Since", date(-51))], False),
    ("stored 404 never answers 304", ETAGGED, 404, [("If-None-Match", '"v1"')], False),
    ("no precondition", ETAGGED, 200, [], False),
]


@pytest.mark.parametrize(
    ("headers", "status", "req", "expected"), [r[1:] for r in COND_ROWS], ids=[r[0] for r in COND_ROWS]
)
def test_client_conditional(headers: H, status: int, req: H, expected: bool) -> None:
    assert client_conditional(req, stored(headers, status)) is expected


# ---------------------------------------------------------------------------------------
# invalidation, RFC 9111 §4.4

URL = "https://ex.com/items?x=1"
# (name, method, status, response headers, expected)
INVALIDATE_ROWS: list[tuple[str, str, int, H, list[str]]] = [
    (
        "POST 201 with relative Location",
        "POST",
        201,
        [("Location", "/items/7")],
        [URL, "https://ex.com/items/7"],
    ),
    ("PUT 204", "PUT", 204, [], [URL]),
    (
        "DELETE 200 with Content-Location",
        "DELETE",
        200,
        [("Content-Location", "items/8")],
        [URL, "https://ex.com/items/8"],
    ),
    (
        "PATCH 303 with both",
        "PATCH",
        303,
        [("Location", "/a"), ("Content-Location", "https://ex.com/b")],
        [URL, "https://ex.com/a", "https://ex.com/b"],
    ),
    ("other host ignored", "POST", 201, [("Location", "https://evil.com/items/7")], [URL]),
    ("other scheme ignored", "POST", 201, [("Location", "http://ex.com/items/7")], [URL]),
    ("other port ignored", "POST", 201, [("Location", "https://ex.com:8443/items/7")], [URL]),
    (
        "explicit default port is same origin",
        "POST",
        201,
        [("Location", "https://EX.com:443/z")],
        [URL, "https://EX.com:443/z"],
    ),
    ("duplicate of the target dropped", "POST", 200, [("Content-Location", URL)], [URL]),
    ("fragment dropped", "POST", 201, [("Location", "/c#top")], [URL, "https://ex.com/c"]),
    ("error status: nothing", "POST", 500, [("Location", "/items/7")], []),
    ("client error: nothing", "DELETE", 404, [], []),
    ("safe method: nothing", "GET", 200, [("Location", "/a")], []),
    ("HEAD: nothing", "HEAD", 200, [], []),
    ("unknown method is unsafe", "PURGE", 200, [], [URL]),
]


@pytest.mark.parametrize(
    ("method", "status", "resp", "expected"),
    [r[1:] for r in INVALIDATE_ROWS],
    ids=[r[0] for r in INVALIDATE_ROWS],
)
def test_invalidation_targets(method: str, status: int, resp: H, expected: list[str]) -> None:
    assert invalidation_targets(method, status, URL, resp) == expected


# ---------------------------------------------------------------------------------------
# cache keys

GEO = KeyRule(geo="country")
# (name, rule, url, request headers, cf, subject, expected key)
KEY_ROWS: list[tuple[str, KeyRule, str, H, dict[str, str] | None, str | None, str]] = [
    ("plain", KeyRule(), "https://ex.com/a", [], None, None, "https://ex.com/a"),
    ("empty path", KeyRule(), "https://ex.com", [], None, None, "https://ex.com/"),
    ("host case and default port", KeyRule(), "HTTPS://Ex.COM:443/A", [], None, None, "https://ex.com/A"),
    ("http default port", KeyRule(), "http://ex.com:80/", [], None, None, "http://ex.com/"),
    ("other port kept", KeyRule(), "http://ex.com:8080/", [], None, None, "http://ex.com:8080/"),
    ("query sorted", KeyRule(), "https://ex.com/a?b=2&a=1", [], None, None, "https://ex.com/a?a=1&b=2"),
    (
        "same name sorted by value",
        KeyRule(),
        "https://ex.com/a?a=2&a=1",
        [],
        None,
        None,
        "https://ex.com/a?a=1&a=2",
    ),
    (
        "tracking dropped",
        KeyRule(),
        "https://ex.com/a?utm_source=x&b=2&gclid=9&fbclid=1&utm_campaign=c",
        [],
        None,
        None,
        "https://ex.com/a?b=2",
    ),
    ("only tracking: no ?", KeyRule(), "https://ex.com/a?utm_medium=m", [], None, None, "https://ex.com/a"),
    (
        "keep only",
        KeyRule(query_keep_only=frozenset({"id"})),
        "https://ex.com/a?z=1&id=4&q=2",
        [],
        None,
        None,
        "https://ex.com/a?id=4",
    ),
    (
        "custom drop",
        KeyRule(query_drop=frozenset({"session"})),
        "https://ex.com/a?session=1&utm_source=x",
        [],
        None,
        None,
        "https://ex.com/a?utm_source=x",
    ),
    (
        "unreserved decoded",
        KeyRule(),
        "https://ex.com/%7Euser/%41b",
        [],
        None,
        None,
        "https://ex.com/~user/Ab",
    ),
    (
        "reserved kept, hex upper",
        KeyRule(),
        "https://ex.com/a%2fb%3a",
        [],
        None,
        None,
        "https://ex.com/a%2Fb%3A",
    ),
    ("non-ASCII encoded", KeyRule(), "https://ex.com/caf\u00e9", [], None, None, "https://ex.com/caf%C3%A9"),
    (
        "encoded query name matches drop",
        KeyRule(),
        "https://ex.com/a?utm%5Fsource=x&k=v",
        [],
        None,
        None,
        "https://ex.com/a?k=v",
    ),
    ("fragment ignored", KeyRule(), "https://ex.com/a#x", [], None, None, "https://ex.com/a"),
    (
        "bare and empty params differ",
        KeyRule(),
        "https://ex.com/a?b&c=",
        [],
        None,
        None,
        "https://ex.com/a?b&c=",
    ),
    (
        "header dimension",
        KeyRule(headers=("Accept-Language",)),
        "https://ex.com/a",
        [("accept-language", "en")],
        None,
        None,
        "https://ex.com/a|h:accept-language=en",
    ),
    (
        "header dimension absent",
        KeyRule(headers=("Accept-Language",)),
        "https://ex.com/a",
        [],
        None,
        None,
        "https://ex.com/a|h:accept-language",
    ),
    (
        "header dimension escaped",
        KeyRule(headers=("X-A",)),
        "https://ex.com/a",
        [("X-A", "a|b  c")],
        None,
        None,
        "https://ex.com/a|h:x-a=a%7Cb c",
    ),
    ("geo country", GEO, "https://ex.com/a", [], {"country": "de"}, None, "https://ex.com/a|geo:DE"),
    ("geo unknown", GEO, "https://ex.com/a", [], None, None, "https://ex.com/a|geo:XX"),
    (
        "geo continent",
        KeyRule(geo="continent"),
        "https://ex.com/a",
        [],
        {"country": "DE", "continent": "EU"},
        None,
        "https://ex.com/a|geo:EU",
    ),
    (
        "anonymous subject",
        KeyRule(per_subject=True),
        "https://ex.com/a",
        [],
        None,
        None,
        "https://ex.com/a|sub:-",
    ),
    (
        "subject hashed",
        KeyRule(per_subject=True),
        "https://ex.com/a",
        [],
        None,
        "alice",
        "https://ex.com/a|sub:2bd806c97f0e00af1a1fc3328fa763a9",
    ),
    (
        "all dimensions in order",
        KeyRule(headers=("X-B", "X-A"), geo="country", per_subject=True),
        "https://ex.com/a?b=1&a=2",
        [("X-A", "1"), ("X-B", "2")],
        {"country": "FR"},
        "alice",
        "https://ex.com/a?a=2&b=1|h:x-a=1|h:x-b=2|geo:FR|sub:2bd806c97f0e00af1a1fc3328fa763a9",
    ),
]


@pytest.mark.parametrize(
    ("rule", "url", "req", "cf", "subject", "expected"),
    [r[1:] for r in KEY_ROWS],
    ids=[r[0] for r in KEY_ROWS],
)
def test_cache_key(
    rule: KeyRule, url: str, req: H, cf: dict[str, str] | None, subject: str | None, expected: str
) -> None:
    assert cache_key(rule, "GET", url, req, cf, subject) == expected
    assert cache_key(rule, "HEAD", url, req, cf, subject) == expected


def test_cache_key_dimensions_separate() -> None:
    rule = KeyRule(geo="country", per_subject=True)
    keys = {
        cache_key(rule, "GET", "https://ex.com/a", [], {"country": c}, s)
        for c in ("DE", "FR")
        for s in ("alice", "bob", None)
    }
    assert len(keys) == 6


def test_cache_key_long_is_hashed() -> None:
    url = "https://ex.com/" + "p" * 600 + "?q=" + "v" * 300
    key = cache_key(KeyRule(), "GET", url, [])
    assert key.startswith("https://ex.com|sha256:") and len(key) == len("https://ex.com|sha256:") + 64
    assert len(key.encode()) <= 512
    assert cache_key(KeyRule(), "GET", url, []) == key
    assert cache_key(KeyRule(), "GET", url + "x", []) != key


@pytest.mark.parametrize("url", ["ftp://ex.com/a", "/relative", "https:///nohost", "https://ex.com:99999/"])
def test_cache_key_bad_url(url: str) -> None:
    with pytest.raises(InvalidInput):
        cache_key(KeyRule(), "GET", url, [])


def test_cache_key_method() -> None:
    with pytest.raises(InvalidInput):
        cache_key(KeyRule(), "POST", "https://ex.com/", [])


# ---------------------------------------------------------------------------------------
# Cache-Status (RFC 9211) and X-Cache

STATUS_ROWS: list[tuple[str, dict[str, Any], str]] = [
    ("hit", dict(hit=True, ttl=12), "edge-kv; hit; ttl=12"),
    ("fractional ttl floored", dict(hit=True, ttl=12.9), "edge-kv; hit; ttl=12"),
    ("stale hit", dict(hit=True, ttl=-3.5), "edge-kv; hit; ttl=-4"),
    (
        "fwd stale stored",
        dict(hit=False, fwd="stale", fwd_status=200, stored=True),
        "edge-kv; fwd=stale; fwd-status=200; stored",
    ),
    (
        "miss",
        dict(hit=False, fwd="uri-miss", fwd_status=200, ttl=60, stored=True),
        "edge-kv; fwd=uri-miss; fwd-status=200; ttl=60; stored",
    ),
    ("bypass", dict(hit=False, fwd="bypass"), "edge-kv; fwd=bypass"),
    ("detail token", dict(hit=False, fwd="method", detail="POST"), "edge-kv; fwd=method; detail=POST"),
    (
        "detail string",
        dict(hit=False, fwd="request", detail='no cache "x"'),
        'edge-kv; fwd=request; detail="no cache \\"x\\""',
    ),
    ("quoted name", dict(hit=True, name="My Cache"), '"My Cache"; hit'),
    ("collapsed and key", dict(hit=True, collapsed=True, key="k 1"), 'edge-kv; hit; collapsed; key="k 1"'),
]


@pytest.mark.parametrize(
    ("kwargs", "expected"), [r[1:] for r in STATUS_ROWS], ids=[r[0] for r in STATUS_ROWS]
)
def test_cache_status(kwargs: dict[str, Any], expected: str) -> None:
    assert cache_status(**kwargs) == expected


@pytest.mark.parametrize(
    ("kwargs"),
    [
        dict(hit=True, fwd="miss"),
        dict(hit=False, fwd="nope"),
        dict(hit=True, ttl=math.nan),
        dict(hit=True, name="caf\u00e9"),
        dict(hit=False, fwd="miss", fwd_status=42),
    ],
)
def test_cache_status_refuses(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        cache_status(**kwargs)


OUTCOME_ROWS: list[tuple[str, dict[str, Any], str, str]] = [
    ("hit", dict(ttl=30), "HIT", "edge-kv; hit; ttl=30"),
    ("stale", dict(ttl=-5), "STALE", "edge-kv; hit; ttl=-5; detail=stale-while-revalidate"),
    (
        "miss",
        dict(stored=True, fwd_status=200, ttl=60),
        "MISS",
        "edge-kv; fwd=uri-miss; fwd-status=200; ttl=60; stored",
    ),
    (
        "revalidated",
        dict(stored=True, fwd_status=304, ttl=60),
        "REVALIDATED",
        "edge-kv; fwd=stale; fwd-status=304; ttl=60; stored",
    ),
    ("expired", dict(stored=True, fwd_status=200), "EXPIRED", "edge-kv; fwd=stale; fwd-status=200; stored"),
    ("bypass", {}, "BYPASS", "edge-kv; fwd=bypass"),
    (
        "error-stale",
        dict(fwd_status=503, ttl=-20),
        "ERROR-STALE",
        "edge-kv; fwd=stale; fwd-status=503; ttl=-20; detail=stale-if-error",
    ),
]


@pytest.mark.parametrize(
    ("outcome", "kwargs", "label", "status"), OUTCOME_ROWS, ids=[r[0] for r in OUTCOME_ROWS]
)
def test_outcomes(outcome: str, kwargs: dict[str, Any], label: str, status: str) -> None:
    assert x_cache_label(outcome) == label
    assert cache_status_for(outcome, **kwargs) == status


def test_unknown_outcome() -> None:
    with pytest.raises(InvalidInput):
        x_cache_label("warm")


# ---------------------------------------------------------------------------------------
# Cache-Control parsing, RFC 9111 §5.2

# (name, value, attribute, expected)
PARSE_ROWS: list[tuple[str, str | None, str, object]] = [
    ("absent", None, "max_age", None),
    ("max-age", "max-age=60", "max_age", 60),
    ("public flag", "public, max-age=60", "public", True),
    ("case-insensitive names", "No-Store", "no_store", True),
    ("spaces around =", "max-age = 60", "max_age", 60),
    ("quoted list with commas", 'no-cache="Set-Cookie, X-Foo", max-age=5', "max_age", 5),
    ("qualified no-cache", 'no-cache="Set-Cookie, X-Foo"', "no_cache", True),
    ("bare max-stale", "max-stale", "max_stale", math.inf),
    ("max-stale seconds", "max-stale=10", "max_stale", 10.0),
    ("invalid max-stale ignored", "max-stale=abc", "max_stale", None),
    ("min-fresh most restrictive", "min-fresh=5, min-fresh=10", "min_fresh", 10),
    (
        "swr most restrictive",
        "stale-while-revalidate=30, stale-while-revalidate=10",
        "stale_while_revalidate",
        10,
    ),
    ("swr valueless ignored", "stale-while-revalidate", "stale_while_revalidate", None),
    ("sie", "stale-if-error=300", "stale_if_error", 300),
    ("only-if-cached", "only-if-cached", "only_if_cached", True),
    ("immutable", "max-age=1, immutable", "immutable", True),
    ("proxy-revalidate", "proxy-revalidate", "proxy_revalidate", True),
    ("must-revalidate", "must-revalidate", "must_revalidate", True),
    ("private absent", "public", "private", False),
    ("empty members", ",, ,max-age=3,", "max_age", 3),
    (
        "unknown kept",
        'foo=bar, baz, qux="a,b"',
        "directives",
        (("foo", "bar"), ("baz", None), ("qux", "a,b")),
    ),
]


@pytest.mark.parametrize(
    ("value", "attr", "expected"), [r[1:] for r in PARSE_ROWS], ids=[r[0] for r in PARSE_ROWS]
)
def test_cache_control_parse(value: str | None, attr: str, expected: object) -> None:
    assert getattr(CacheControl.parse(value), attr) == expected
