"""Shared argument checks: the same bad input fails the same way on every backend."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_kv.core.validate import (
    MAX_KEY_LENGTH,
    check_cost,
    check_key,
    check_positive_int,
    check_positive_number,
)

# --- check_positive_int -------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 2, 10**18])
def test_positive_int_returns_the_value(value: int) -> None:
    assert check_positive_int("limit", value) == value


@pytest.mark.parametrize("value", [0, -1, True, False, 1.0, "1", None, [1]])
def test_positive_int_refuses_everything_else_naming_the_argument(value: object) -> None:
    with pytest.raises(ValueError, match=r"^limit must be"):
        check_positive_int("limit", value)


# --- check_cost -------------------------------------------------------------------


@pytest.mark.parametrize("cost", [0, 1, 9, 10])
def test_cost_from_zero_peek_up_to_capacity(cost: int) -> None:
    assert check_cost(cost, 10) == cost


def test_cost_above_capacity_could_never_be_admitted() -> None:
    with pytest.raises(ValueError, match="exceeds capacity 10"):
        check_cost(11, 10)


@pytest.mark.parametrize("cost", [-1, True, 1.0, "1", None])
def test_cost_must_be_a_non_negative_int(cost: object) -> None:
    with pytest.raises(ValueError, match=r"^cost must be"):
        check_cost(cost, 10)


# --- check_positive_number ----------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(0.5, 0.5), (3, 3.0), (1e-9, 1e-9), (1e300, 1e300)])
def test_positive_number_returns_a_float(value: float, expected: float) -> None:
    result = check_positive_number("rate", value)
    assert result == expected
    assert type(result) is float


@pytest.mark.parametrize("value", [0, 0.0, -0.0, -1, math.nan, math.inf, -math.inf, True, "1", None])
def test_positive_number_refuses_non_finite_non_positive_and_non_numbers(value: object) -> None:
    with pytest.raises(ValueError, match=r"^rate must be"):
        check_positive_number("rate", value)


# --- check_key ---------------------------------------------------------------------


def test_default_key_limit_is_512_bytes() -> None:
    assert MAX_KEY_LENGTH == 512


@pytest.mark.parametrize(
    "key",
    ["a", "user:42", "a" * 512, "\u00e9" * 256, "\U0001f600" * 128, "\u6f22" * 170, " "],
    ids=["one", "plain", "512-ascii", "512-bytes-2-byte-chars", "512-bytes-emoji", "510-bytes-cjk", "space"],
)
def test_keys_up_to_512_utf8_bytes_are_accepted(key: str) -> None:
    assert check_key(key) is key


@pytest.mark.parametrize(
    ("key", "nbytes"),
    [("a" * 513, 513), ("\u00e9" * 257, 514), ("\U0001f600" * 129, 516), ("\u6f22" * 171, 513)],
    ids=["513-ascii", "257-chars-514-bytes", "129-emoji", "171-cjk"],
)
def test_key_limit_counts_bytes_not_characters(key: str, nbytes: int) -> None:
    assert len(key) < 520
    with pytest.raises(ValueError, match=f"key is {nbytes} bytes; the maximum is 512"):
        check_key(key)


def test_custom_max_length() -> None:
    assert check_key("abcd", max_length=4) == "abcd"
    with pytest.raises(ValueError, match="maximum is 3"):
        check_key("abcd", max_length=3)
    with pytest.raises(ValueError, match="key is 4 bytes"):
        check_key("\u00e9\u00e9", max_length=3)


def test_empty_key_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        check_key("")


@pytest.mark.parametrize("key", [b"user", 42, None, ["k"]])
def test_non_str_key_is_refused(key: object) -> None:
    with pytest.raises(ValueError, match="must be a str"):
        check_key(key)


def test_lone_surrogate_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match="lone surrogate"):
        check_key("abc\ud800")


@given(st.text(max_size=300), st.integers(1, 600))
def test_check_key_accepts_exactly_non_empty_keys_within_the_byte_limit(key: str, limit: int) -> None:
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        size = -1
    ok = 1 <= size <= limit
    if ok:
        assert check_key(key, max_length=limit) == key
    else:
        with pytest.raises(ValueError):
            check_key(key, max_length=limit)
