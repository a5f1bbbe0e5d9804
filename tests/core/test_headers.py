"""Rate-limit headers: IETF httpapi draft structured-field form, and Retry-After."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_kv.core.decision import Decision
from edge_kv.core.headers import policy_header, rate_limit_headers, ratelimit_header
from edge_kv.core.ratelimit import FixedWindow, TokenBucket

# --- a strict RFC 8941 parser for what these headers may contain ------------------
# List of Items; each Item is an sf-string with parameters whose values are sf-integers.

_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_INT = re.compile(r"-?[0-9]{1,15}")

Params = dict[str, int | bool]


def _parse_string(s: str, i: int) -> tuple[str, int]:
    if s[i] != '"':
        raise ValueError(f"expected sf-string at {i}")
    i += 1
    out = []
    while i < len(s):
        c = s[i]
        if c == "\\":
            if i + 1 >= len(s) or s[i + 1] not in '"\\':
                raise ValueError(f"bad escape at {i}")
            out.append(s[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        elif not 0x20 <= ord(c) <= 0x7E:
            raise ValueError(f"character {c!r} not allowed in sf-string")
        else:
            out.append(c)
            i += 1
    raise ValueError("unterminated sf-string")


def _parse_params(s: str, i: int) -> tuple[Params, int]:
    params: Params = {}
    while i < len(s) and s[i] == ";":
        i += 1
        while i < len(s) and s[i] == " ":
            i += 1
        m = _KEY.match(s, i)
        if m is None:
            raise ValueError(f"bad parameter key at {i}")
        key, i = m.group(), m.end()
        value: int | bool = True
        if i < len(s) and s[i] == "=":
            m = _INT.match(s, i + 1)
            if m is None:
                raise ValueError(f"bad integer at {i + 1}")
            value, i = int(m.group()), m.end()
            if i < len(s) and s[i].isdigit():
                raise ValueError("sf-integer has more than 15 digits")
        params[key] = value
    return params, i


def parse_sf_list(s: str) -> list[tuple[str, Params]]:
    """Parse an RFC 8941 List of string Items with integer parameters, strictly."""
    items: list[tuple[str, Params]] = []
    i = 0
    while i < len(s) and s[i] == " ":
        i += 1
    while i < len(s):
        name, i = _parse_string(s, i)
        params, i = _parse_params(s, i)
        items.append((name, params))
        while i < len(s) and s[i] in " \t":
            i += 1
        if i == len(s):
            return items
        if s[i] != ",":
            raise ValueError(f"expected ',' at {i}")
        i += 1
        while i < len(s) and s[i] in " \t":
            i += 1
        if i == len(s):
            raise ValueError("trailing comma")
    return items


def test_parser_rejects_malformed_values() -> None:
    for bad in ['"a', "a;q=1", '"a";Q=1', '"a";q=x', '"a",', '"a" "b"', '"\\x"', '"a";q=1234567890123456']:
        with pytest.raises(ValueError):
            parse_sf_list(bad)


# --- fixtures ---------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    name: str
    limit: int
    window_us: int


def _decision(
    allowed: bool = True,
    remaining: int = 3,
    retry_us: int = 0,
    reset_us: int = 1_000_000,
    policy: str = "per-second",
    limit: int = 10,
) -> Decision:
    return Decision(allowed, limit, remaining, retry_us, reset_us, policy)


# --- RateLimit-Policy ---------------------------------------------------------------


def test_policy_header_matches_draft_example() -> None:
    value = policy_header([Policy("per-second", 10, 1_000_000), Policy("per-hour", 1000, 3_600_000_000)])
    assert value == '"per-second";q=10;w=1, "per-hour";q=1000;w=3600'
    assert parse_sf_list(value) == [("per-second", {"q": 10, "w": 1}), ("per-hour", {"q": 1000, "w": 3600})]


@pytest.mark.parametrize(
    ("window_us", "w"), [(1, 1), (999_999, 1), (1_000_000, 1), (1_000_001, 2), (1_500_000, 2)]
)
def test_policy_window_is_whole_seconds_rounded_up_at_least_one(window_us: int, w: int) -> None:
    assert parse_sf_list(policy_header([Policy("p", 1, window_us)])) == [("p", {"q": 1, "w": w})]


def test_policy_header_accepts_real_core_policies() -> None:
    bucket = TokenBucket(capacity=100, refill_rate=10, name="burst")
    window = FixedWindow(limit=1000, window_s=3600, name="hourly")
    assert parse_sf_list(policy_header([bucket, window])) == [
        ("burst", {"q": 100, "w": 10}),
        ("hourly", {"q": 1000, "w": 3600}),
    ]


def test_policy_names_are_escaped() -> None:
    value = policy_header([Policy('we"ird\\name', 5, 1_000_000)])
    assert value == '"we\\"ird\\\\name";q=5;w=1'
    assert parse_sf_list(value)[0][0] == 'we"ird\\name'


@pytest.mark.parametrize("name", ["tab\there", "new\nline", "caf\u00e9", "\x7f", "\u2603"])
def test_policy_names_outside_printable_ascii_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        policy_header([Policy(name, 1, 1_000_000)])
    with pytest.raises(ValueError, match="printable ASCII"):
        ratelimit_header(_decision(policy=name))


_names = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


@given(st.lists(st.tuples(_names, st.integers(1, 10**12), st.integers(1, 10**15)), min_size=1, max_size=5))
def test_policy_header_round_trips_through_a_strict_sf_parser(
    policies: list[tuple[str, int, int]],
) -> None:
    value = policy_header([Policy(n, q, w) for n, q, w in policies])
    assert parse_sf_list(value) == [(n, {"q": q, "w": max(1, -(-w // 1_000_000))}) for n, q, w in policies]


# --- RateLimit ---------------------------------------------------------------------


def test_ratelimit_header_matches_draft_example() -> None:
    assert ratelimit_header(_decision(remaining=3, reset_us=1_000_000)) == '"per-second";r=3;t=1'


def test_ratelimit_clamps_negative_remaining_and_rounds_reset_up() -> None:
    value = ratelimit_header(_decision(allowed=False, remaining=-4, retry_us=10, reset_us=2_000_001))
    assert parse_sf_list(value) == [("per-second", {"r": 0, "t": 3})]


def test_ratelimit_reset_zero_when_full() -> None:
    assert parse_sf_list(ratelimit_header(_decision(remaining=10, reset_us=0))) == [
        ("per-second", {"r": 10, "t": 0})
    ]


@given(_names, st.integers(-5, 10**12), st.integers(0, 10**15))
def test_ratelimit_header_is_a_single_sf_item(name: str, remaining: int, reset_us: int) -> None:
    items = parse_sf_list(ratelimit_header(_decision(remaining=remaining, reset_us=reset_us, policy=name)))
    assert items == [(name, {"r": max(0, remaining), "t": -(-reset_us // 1_000_000)})]


# --- the full header set ----------------------------------------------------------


def test_allowed_response_has_no_retry_after() -> None:
    headers = rate_limit_headers([Policy("per-second", 10, 1_000_000)], [_decision()])
    assert [name for name, _ in headers] == ["RateLimit-Policy", "RateLimit"]


@pytest.mark.parametrize(
    ("retry_us", "seconds"), [(1, "1"), (999_999, "1"), (1_000_000, "1"), (1_000_001, "2"), (0, "1")]
)
def test_refused_response_has_retry_after_in_whole_seconds_rounded_up(retry_us: int, seconds: str) -> None:
    headers = dict(
        rate_limit_headers([Policy("p", 1, 1_000_000)], [_decision(False, 0, retry_us, 5_000_000, "p", 1)])
    )
    assert headers["Retry-After"] == seconds
    assert re.fullmatch(r"[0-9]+", headers["Retry-After"])  # RFC 9110 delay-seconds


def test_tightest_tier_is_reported() -> None:
    policies = [Policy("per-second", 10, 1_000_000), Policy("per-hour", 1000, 3_600_000_000)]
    second = _decision(True, 7, 0, 1_000_000, "per-second", 10)
    hour = _decision(True, 2, 0, 3_600_000_000, "per-hour", 1000)
    headers = dict(rate_limit_headers(policies, [second, hour]))
    assert parse_sf_list(headers["RateLimit"]) == [("per-hour", {"r": 2, "t": 3600})]
    assert "Retry-After" not in headers
    refused = _decision(False, 0, 4_200_000, 60_000_000, "per-hour", 1000)
    headers = dict(rate_limit_headers(policies, [second, refused]))
    assert parse_sf_list(headers["RateLimit"]) == [("per-hour", {"r": 0, "t": 60})]
    assert headers["Retry-After"] == "5"


def test_no_decisions_is_an_error() -> None:
    with pytest.raises(ValueError):
        rate_limit_headers([Policy("p", 1, 1)], [])
