"""Backoff arithmetic, Retry-After parsing (RFC 9110 §10.2.3) and retryable statuses.

Stdlib + pytest + hypothesis only: runs on CPython and again inside Pyodide."""

from __future__ import annotations

import email.utils
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_kv.core.backoff import (
    MAX_RETRY_AFTER_S,
    NO_RETRY,
    RETRYABLE_STATUSES,
    DecorrelatedJitter,
    Exponential,
    FullJitter,
    RetryVerdict,
    classify_status,
    parse_retry_after,
)

NOW = 1_700_000_000.0


def test_parse_retry_after() -> None:
    # Moved from tests/origin/resilience/test_resilience_retry.py (the parser is core now).
    now = 1_700_000_000.0
    assert parse_retry_after("0", now) == 0.0
    assert parse_retry_after(" 30 ", now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now + 90, usegmt=True), now) == pytest.approx(90, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now) == 0.0
    for bad in (None, "", "-5", "soon", "1.5", "Sun, 99 Foo 2024 00:00:00 GMT"):
        assert parse_retry_after(bad, now) is None


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate, the preferred format
        "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850 format
        "Sun Nov  6 08:49:37 1994",  # ANSI C asctime() format (UTC by definition)
    ],
)
def test_all_three_http_date_formats_are_read(value: str) -> None:
    # RFC 9110 §5.6.7: a recipient MUST accept all three formats. 1994-11-06T08:49:37Z:
    when = 784111777.0
    assert parse_retry_after(value, when - 120) == 120.0
    assert parse_retry_after(value, when + 5) == 0.0


def test_asctime_with_a_two_digit_day() -> None:
    assert parse_retry_after("Wed Nov 16 08:49:37 1994", 784975777.0 - 3) == 3.0


@pytest.mark.parametrize(
    "bad",
    [
        "\u00b2",  # superscript two: str.isdigit() says yes, int() says no
        "\u0663",  # ARABIC-INDIC DIGIT THREE: not an ASCII DIGIT
        "1e3",
        "+5",
        "5 s",
        "Sun, 06 Nov 1994 08:49:37",  # no zone: not an HTTP-date
        "Sun, 06 Nov 1994 08:49:37 -0000",  # "unknown zone"
        "Sun Nov  6 08:49:37",
        "Sun, 31 Feb 2024 00:00:00 GMT",
    ],
)
def test_malformed_values_are_none(bad: str) -> None:
    assert parse_retry_after(bad, NOW) is None


def test_huge_delay_seconds_are_capped_not_an_error() -> None:
    assert parse_retry_after("9" * 40, NOW) == float(MAX_RETRY_AFTER_S)
    assert parse_retry_after("9" * 5000, NOW) == float(MAX_RETRY_AFTER_S)  # past int()'s digit limit
    assert parse_retry_after("0" * 30 + "7", NOW) == 7.0


@given(st.integers(min_value=0, max_value=10**15))
def test_delay_seconds_round_trip(seconds: int) -> None:
    assert parse_retry_after(str(seconds), NOW) == float(seconds)


@given(st.integers(min_value=-(10**6), max_value=10**6))
def test_imf_fixdate_is_relative_to_now(offset: int) -> None:
    value = email.utils.formatdate(NOW + offset, usegmt=True)
    assert parse_retry_after(value, NOW) == max(0.0, float(offset))


@given(st.integers(min_value=1, max_value=80), st.integers(min_value=0, max_value=2**32))
def test_full_jitter_stays_within_its_exponential_envelope(retry: int, seed: int) -> None:
    backoff = FullJitter(base=0.1, cap=5.0)
    delay = backoff.delay(retry, 0.0, random.Random(seed))
    assert 0.0 <= delay <= min(5.0, 0.1 * 2 ** min(retry - 1, 60))


@given(st.floats(min_value=0.0, max_value=100.0), st.integers(min_value=0, max_value=2**32))
def test_decorrelated_jitter_bounds(previous: float, seed: int) -> None:
    backoff = DecorrelatedJitter(base=0.05, cap=2.0)
    delay = backoff.delay(1, previous, random.Random(seed))
    assert 0.05 <= delay <= min(2.0, 3 * max(0.05, previous)) + 1e-12


def test_exponential_doubles_up_to_its_cap() -> None:
    rng = random.Random(0)
    assert [Exponential(0.25, 3.0).delay(n, 0.0, rng) for n in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 3.0, 3.0]
    assert Exponential(1.0, 10.0).delay(10_000, 0.0, rng) == 10.0  # no overflow for huge retry numbers


def test_classify_status() -> None:
    assert frozenset({408, 429, 502, 503, 504}) == RETRYABLE_STATUSES
    for status in (400, 401, 403, 404, 422, 500, 501):
        assert classify_status(status, {"retry-after": "3"}, now=NOW) == NO_RETRY
    assert classify_status(503, None, now=NOW) == RetryVerdict(True, None)
    assert classify_status(429, {"retry-after": "7"}, now=NOW) == RetryVerdict(True, 7.0)
    assert classify_status(500, {}, now=NOW, retry_statuses={500}) == RetryVerdict(True, None)
