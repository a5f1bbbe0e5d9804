"""Shared HTTP cache semantics (edge_kv.core.httpcache): records, 304 merging, validators,
dates, input errors and hypothesis properties. The RFC scenario table is in
test_httpcache_scenarios.py.

Stdlib + pytest + hypothesis only: runs on CPython and again inside Pyodide."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_kv.core.errors import InvalidInput
from edge_kv.core.httpcache import (
    AGE_CAP,
    CacheControl,
    KeyRule,
    StoredResponse,
    age_header,
    cache_key,
    conditional_headers,
    current_age,
    evaluate,
    format_http_date,
    freshness_lifetime,
    merge_not_modified,
    not_modified_matches,
    parse_http_date,
    storable,
    vary_matches,
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
# the record


def test_json_round_trip() -> None:
    s = StoredResponse.from_exchange(
        200,
        [("Cache-Control", "max-age=60"), ("Vary", "Accept-Encoding"), ("ETag", '"a"')],
        [("Accept-Encoding", "gzip, br")],
        T0 - 1.5,
        T0,
    )
    assert s.vary == (("accept-encoding", "br,gzip"),)
    data = s.to_json()
    assert StoredResponse.from_json(data) == s
    assert StoredResponse.from_json(json.dumps(data)) == s
    assert json.loads(json.dumps(data)) == data


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        "[]",
        {"v": 2},
        {"v": 1, "status": 200},
        {"v": 1, "status": 200, "headers": [["a"]], "request_time": 0, "response_time": 0},
        {"v": 1, "status": 99, "headers": [], "request_time": 0, "response_time": 0},
        {"v": 1, "status": 200, "headers": [], "request_time": 5, "response_time": 0},
        {"v": 1, "status": 200, "headers": [], "request_time": "x", "response_time": 0},
    ],
)
def test_from_json_refuses(bad: object) -> None:
    with pytest.raises(InvalidInput):
        StoredResponse.from_json(bad)  # type: ignore[arg-type]


def test_record_validation() -> None:
    with pytest.raises(InvalidInput):
        StoredResponse(200, (), T0 + 1, T0)
    with pytest.raises(InvalidInput):
        StoredResponse(True, (), T0, T0)
    with pytest.raises(InvalidInput):
        StoredResponse(200, (("", "x"),), T0, T0)
    with pytest.raises(InvalidInput):
        StoredResponse(200, (), math.inf, math.inf)
    with pytest.raises(InvalidInput):
        current_age(stored([]), math.nan)


def test_from_exchange_drops_hop_by_hop() -> None:
    s = StoredResponse.from_exchange(
        200,
        [
            ("Connection", "close, X-Trace"),
            ("X-Trace", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Type", "text/plain"),
        ],
        [],
        T0,
        T0,
    )
    assert s.headers == (("Content-Type", "text/plain"),)


def test_vary_star_never_matches_even_itself() -> None:
    s = StoredResponse.from_exchange(200, [("Vary", "*")], [], T0, T0)
    assert s.vary == ()
    assert not vary_matches(s, [])


# ---------------------------------------------------------------------------------------
# validation and 304


def test_conditional_headers() -> None:
    s = stored([("ETag", 'W/"v1"'), ("Last-Modified", date(-100))])
    assert conditional_headers(s) == [("If-None-Match", 'W/"v1"'), ("If-Modified-Since", date(-100))]
    assert conditional_headers(stored([("Last-Modified", "bogus")])) == []
    assert conditional_headers(stored([("Cache-Control", "max-age=1")])) == []


def test_merge_not_modified() -> None:
    s = stored(
        [
            ("Date", date(-100)),
            ("Age", "50"),
            ("Cache-Control", "max-age=60"),
            ("ETag", '"v1"'),
            ("Content-Length", "1234"),
            ("Content-Type", "text/html"),
            ("X-Old", "1"),
            ("X-Old", "2"),
        ],
        request_time=T0 - 101,
        response_time=T0 - 100,
    )
    assert evaluate(s, [], T0).action == "revalidate"
    merged = merge_not_modified(
        s,
        [
            ("Date", date(0)),
            ("Cache-Control", "max-age=300"),
            ("ETag", '"v1"'),
            ("Content-Length", "0"),
            ("X-Old", "3"),
            ("Connection", "close"),
            ("Transfer-Encoding", "chunked"),
        ],
        T0 - 1,
        T0,
    )
    assert merged.headers == (
        ("Content-Length", "1234"),
        ("Content-Type", "text/html"),
        ("Date", date(0)),
        ("Cache-Control", "max-age=300"),
        ("ETag", '"v1"'),
        ("X-Old", "3"),
    )
    assert (merged.request_time, merged.response_time, merged.status) == (T0 - 1, T0, 200)
    verdict = evaluate(merged, [], T0 + 10)
    assert (verdict.action, verdict.age, verdict.ttl) == ("hit", 11, 289)


def test_merge_keeps_vary_and_takes_new_age() -> None:
    s = StoredResponse(200, (("Age", "500"), ("Vary", "Accept")), T0 - 10, T0 - 10, (("accept", "a"),))
    merged = merge_not_modified(s, [("Age", "3")], T0, T0)
    assert merged.vary == (("accept", "a"),)
    assert current_age(merged, T0) == 3
    assert current_age(merge_not_modified(s, [], T0, T0), T0) == 0


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ([("ETag", '"a"')], [("ETag", '"a"')], True),
        ([("ETag", '"a"')], [("ETag", '"b"')], False),
        ([("ETag", 'W/"a"')], [("ETag", '"a"')], False),  # strong validator needs a strong match
        ([("ETag", '"a"')], [("ETag", 'W/"a"')], True),
        ([("Last-Modified", date(-5))], [("Last-Modified", date(-5))], True),
        ([("Last-Modified", date(-5))], [("Last-Modified", date(-4))], False),
        ([("ETag", '"a"')], [], True),
    ],
)
def test_not_modified_matches(old: H, new: H, expected: bool) -> None:
    assert not_modified_matches(stored(old), new) is expected


# ---------------------------------------------------------------------------------------
# headers, dates, errors


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (0, "0"),
        (0.9, "0"),
        (12.7, "12"),
        (-5, "0"),
        (2**31 - 1, "2147483647"),
        (2**40, "2147483648"),
        (math.inf, "2147483648"),
    ],
)
def test_age_header(age: float, expected: str) -> None:
    assert age_header(age) == expected


def test_age_header_refuses_nan() -> None:
    with pytest.raises(InvalidInput):
        age_header(math.nan)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", 784111777.0),
        ("Sunday, 06-Nov-94 08:49:37 GMT", 784111777.0),
        ("Sun Nov  6 08:49:37 1994", 784111777.0),
        ("  Sun, 06 Nov 1994 08:49:37 GMT ", 784111777.0),
        ("Sun, 06 Nov 1994 08:49:37 UTC", None),
        ("Sun, 06 Nov 1994 24:00:00 GMT", None),
        ("Sun, 06 Foo 1994 08:49:37 GMT", None),
        ("0", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_http_date(text: str | None, expected: float | None) -> None:
    assert parse_http_date(text) == expected


def test_format_http_date() -> None:
    assert format_http_date(784111777.9) == "Sun, 06 Nov 1994 08:49:37 GMT"


@pytest.mark.parametrize("headers", [[("a",)], [(1, "x")], [("a", None)], ["ab"]])
def test_bad_headers(headers: object) -> None:
    with pytest.raises(InvalidInput):
        storable("GET", 200, headers, [], None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        evaluate(stored([]), headers, T0)  # type: ignore[arg-type]


def test_bad_key_rule() -> None:
    with pytest.raises(InvalidInput):
        KeyRule(geo="city")


def test_cache_control_refuses_non_string() -> None:
    with pytest.raises(InvalidInput):
        CacheControl.parse(5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# properties

DIRECTIVES = [
    "max-age=60",
    "s-maxage=30",
    "no-store",
    "no-cache",
    "private",
    "public",
    "must-revalidate",
    "proxy-revalidate",
    "stale-while-revalidate=20",
    "stale-if-error=40",
    "immutable",
    "must-understand",
    "max-age=abc",
]
times = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
cc_values = st.lists(st.sampled_from(DIRECTIVES), max_size=5).map(", ".join)


@settings(max_examples=200, deadline=None)
@given(
    req_delay=st.floats(min_value=0, max_value=1e4),
    date_offset=times,
    age=st.one_of(st.none(), st.integers(min_value=-10, max_value=10**12).map(str), st.text(max_size=5)),
    now_offset=times,
)
def test_age_never_negative(req_delay: float, date_offset: float, age: str | None, now_offset: float) -> None:
    headers: H = [("Date", date(date_offset))]
    if age is not None:
        headers.append(("Age", age))
    s = stored(headers, request_time=T0 - req_delay)
    value = current_age(s, T0 + now_offset)
    assert value >= 0
    assert 0 <= int(age_header(value)) <= AGE_CAP


@settings(max_examples=200, deadline=None)
@given(
    response_cc=cc_values,
    request_cc=st.sampled_from(["", "no-store", "max-age=0"]),
    status=st.sampled_from([200, 404, 302, 500]),
)
def test_storable_never_no_store_or_private(response_cc: str, request_cc: str, status: int) -> None:
    ok, reason = storable("GET", status, [("Cache-Control", request_cc)], [("Cache-Control", response_cc)])
    cc = CacheControl.parse(response_cc)
    if ok:
        assert reason == "ok"
        assert not cc.private
        assert request_cc != "no-store"
        assert not cc.no_store or cc.must_understand
    elif request_cc == "no-store" or (cc.no_store and not cc.must_understand):
        assert reason == "no-store"


RANK = {"hit": 0, "stale-while-revalidate": 1, "revalidate": 2}


@settings(max_examples=200, deadline=None)
@given(
    response_cc=cc_values,
    request_cc=st.sampled_from(
        ["", "max-age=100", "min-fresh=10", "max-stale=15", "max-stale", "stale-if-error=5"]
    ),
    age=st.sampled_from([None, "0", "30", "90"]),
    offsets=st.lists(st.floats(min_value=0, max_value=500, allow_nan=False), min_size=2, max_size=8),
)
def test_action_monotone_in_time(
    response_cc: str, request_cc: str, age: str | None, offsets: list[float]
) -> None:
    headers: H = [("Cache-Control", response_cc), ("Date", date(0))]
    if age is not None:
        headers.append(("Age", age))
    s = stored(headers)
    req: H = [("Cache-Control", request_cc)]
    verdicts = [evaluate(s, req, T0 + t) for t in sorted(offsets)]
    ranks = [RANK[v.action] for v in verdicts]
    assert ranks == sorted(ranks)
    ages = [v.age for v in verdicts]
    assert ages == sorted(ages)
    sie = [v.stale_if_error_ok for v in verdicts]
    assert sie == sorted(sie, reverse=True)  # once stale-if-error stops allowing, it never allows again
    must_revalidate = CacheControl.parse(response_cc).must_revalidate
    for t, v in zip(sorted(offsets), verdicts, strict=True):
        assert v.ttl == pytest.approx(freshness_lifetime(s) - current_age(s, T0 + t))
        assert v.fresh is (v.action == "hit")
        if must_revalidate:
            assert not v.stale_if_error_ok
            assert v.action != "stale-while-revalidate"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_parse_never_raises(text: str) -> None:
    cc = CacheControl.parse(text)
    for attr in ("max_age", "s_maxage", "stale_while_revalidate", "stale_if_error", "min_fresh"):
        value = getattr(cc, attr)
        assert value is None or 0 <= value <= AGE_CAP
    assert cc.max_stale is None or cc.max_stale >= 0


query_params = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "utm_source", "q", "%7E", "fbclid"]),
        st.text(alphabet="abc~%20é+", max_size=4),
    ),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(params=query_params, data=st.data())
def test_cache_key_query_order_insensitive(params: list[tuple[str, str]], data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(params))

    def url(ps: list[tuple[str, str]]) -> str:
        return "https://Ex.com/p?" + "&".join(f"{n}={v}" for n, v in ps)

    rule = KeyRule(headers=("X-A",), geo="country", per_subject=True)
    k1 = cache_key(rule, "GET", url(params), [("X-A", "v")], {"country": "de"}, "s")
    k2 = cache_key(rule, "HEAD", url(list(shuffled)), [("x-a", "v")], {"country": "DE"}, "s")
    assert k1 == k2
    assert "utm_source" not in k1 and "fbclid" not in k1
    assert len(k1.encode()) <= 512 and k1.isprintable() and k1.isascii()


@settings(max_examples=100, deadline=None)
@given(path=st.text(max_size=700), query=st.text(max_size=100))
def test_cache_key_bounded_and_printable(path: str, query: str) -> None:
    key = cache_key(
        KeyRule(),
        "GET",
        "https://ex.com/" + path.replace("#", "").replace("?", "") + "?" + query.replace("#", ""),
        [],
    )
    assert len(key.encode()) <= 512 and key.isprintable() and key.isascii()


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=253402300799))
def test_http_date_round_trip(ts: int) -> None:
    assert parse_http_date(format_http_date(ts)) == ts
