"""Fingerprints, key validation and scoping (pure functions)."""

from __future__ import annotations

import pytest

from edge_kv.origin.idempotency import check_idempotency_key, fingerprint, scoped_key


def test_json_bodies_are_canonicalised() -> None:
    a = fingerprint("POST", "/charges", b'{"amount": 10, "currency": "eur"}', "application/json")
    b = fingerprint("post", "/charges", b'{"currency":"eur",\n "amount":10}', "application/json; charset=utf-8")
    assert a == b
    assert a == fingerprint("POST", "/charges", b'{"currency":"eur","amount":10}', "application/problem+json")


def test_any_difference_in_method_path_or_body_changes_it() -> None:
    base = fingerprint("POST", "/charges", b'{"amount":10}', "application/json")
    assert base != fingerprint("PUT", "/charges", b'{"amount":10}', "application/json")
    assert base != fingerprint("POST", "/charges/", b'{"amount":10}', "application/json")
    assert base != fingerprint("POST", "/charges?x=1", b'{"amount":10}', "application/json")
    assert base != fingerprint("POST", "/charges", b'{"amount":11}', "application/json")
    assert base != fingerprint("POST", "/charges", b'{"amount":10.0}', "application/json")


def test_non_json_bodies_hash_byte_for_byte() -> None:
    a = fingerprint("POST", "/x", b'{"a":1, "b":2}', "text/plain")
    assert a != fingerprint("POST", "/x", b'{"b":2, "a":1}', "text/plain")
    assert a == fingerprint("POST", "/x", b'{"a":1, "b":2}', None)
    # JSON content type but not JSON: falls back to the raw bytes, no exception.
    assert fingerprint("POST", "/x", b"{nope", "application/json") == fingerprint("POST", "/x", b"{nope", None)
    assert fingerprint("POST", "/x", b"\xff\xfe", "application/json") != fingerprint("POST", "/x", b"\xff", None)


@pytest.mark.parametrize("key", ["a", "550e8400-e29b-41d4-a716-446655440000", "~" * 255, "K!#$%&'*+.^_`|"])
def test_good_keys(key: str) -> None:
    assert check_idempotency_key(key) == key


@pytest.mark.parametrize(
    "key",
    ["", "x" * 256, "has space", "tab\there", "nl\n", "caf\u00e9", "\x00", 42, None, b"bytes"],
)
def test_bad_keys(key: object) -> None:
    with pytest.raises(ValueError):
        check_idempotency_key(key)


def test_max_length_is_configurable() -> None:
    assert check_idempotency_key("x" * 300, max_length=300)
    with pytest.raises(ValueError, match="maximum is 8"):
        check_idempotency_key("x" * 9, max_length=8)


def test_scoping_cannot_collide() -> None:
    assert scoped_key("alice", "k") != scoped_key("bob", "k")
    assert scoped_key("a:b", "c") != scoped_key("a", "b:c")
    assert scoped_key("", "k") != scoped_key("k", "")
    with pytest.raises(ValueError):
        scoped_key("nul\x00", "k")
    with pytest.raises(ValueError):
        scoped_key(7, "k")  # type: ignore[arg-type]
