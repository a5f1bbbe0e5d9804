"""Fingerprints, key validation and scoping (pure functions)."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_kv.origin.idempotency import check_idempotency_key, fingerprint, scoped_key


def test_json_bodies_are_canonicalised() -> None:
    a = fingerprint("POST", "/charges", b'{"amount": 10, "currency": "eur"}', "application/json")
    b = fingerprint(
        "post", "/charges", b'{"currency":"eur",\n "amount":10}', "application/json; charset=utf-8"
    )
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
    assert fingerprint("POST", "/x", b"{nope", "application/json") == fingerprint(
        "POST", "/x", b"{nope", None
    )
    assert fingerprint("POST", "/x", b"\xff\xfe", "application/json") != fingerprint(
        "POST", "/x", b"\xff", None
    )


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


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=5),
    max_leaves=20,
)


def _shuffled(value: object, rnd: random.Random) -> object:
    if isinstance(value, dict):
        items = [(k, _shuffled(v, rnd)) for k, v in value.items()]
        rnd.shuffle(items)
        return dict(items)
    if isinstance(value, list):
        return [_shuffled(v, rnd) for v in value]
    return value


@settings(max_examples=200, deadline=None)
@given(doc=json_values, seed=st.integers(0, 2**32), indent=st.sampled_from([None, 1, 4]))
def test_json_encodings_of_one_document_share_a_fingerprint(
    doc: object, seed: int, indent: int | None
) -> None:
    a = json.dumps(doc).encode()
    b = json.dumps(_shuffled(doc, random.Random(seed)), indent=indent, ensure_ascii=seed % 2 == 0).encode()
    assert fingerprint("POST", "/p", a, "application/json") == fingerprint(
        "POST", "/p", b, "application/json"
    )


@settings(max_examples=200, deadline=None)
@given(x=json_values, y=json_values)
def test_different_documents_differ(x: object, y: object) -> None:
    if json.dumps(x, sort_keys=True) != json.dumps(y, sort_keys=True):
        fx = fingerprint("POST", "/p", json.dumps(x).encode(), "application/json")
        assert fx != fingerprint("POST", "/p", json.dumps(y).encode(), "application/json")
