"""Interoperability of edge_kv's RFC 9421 implementation with an independent one.

``http-message-signatures`` (PyPI, pyauth/http-message-signatures) signs and verifies
``hmac-sha256`` signatures and RFC 9530 digests. Both directions are checked: what it
signs, ``edge_kv.core.httpsig`` and ``edge_kv.origin.httpsig`` verify; what our core
signs, it verifies. Tampering is refused by both.
"""

from __future__ import annotations

import base64
import datetime
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from http_message_signatures import (
    ContentDigest,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    InvalidSignature,
    MappingKeyResolver,
    algorithms,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_kv.core import httpsig as hs
from edge_kv.origin.httpsig import MemoryNonceStore, SignaturePolicy, verify_request

SECRET = bytes(range(32, 96))
KEYID = "edge-2026-11"
RING = hs.Keyring([hs.HmacKey(KEYID, SECRET)])
RESOLVER = MappingKeyResolver(public_keys={KEYID: SECRET}, private_keys={KEYID: SECRET})
EDGE = ("@method", "@target-uri", "content-digest", "x-edge-subject", "x-edge-scopes", "x-edge-issuer")


@dataclass
class Message:
    """The request interface http-message-signatures reads: method, url, headers."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)

    def ours(self) -> hs.HttpRequest:
        return hs.HttpRequest.build(self.method, self.url, self.headers)


def _their_signer() -> HTTPMessageSigner:
    return HTTPMessageSigner(signature_algorithm=algorithms.HMAC_SHA256, key_resolver=RESOLVER)


def _their_verifier() -> HTTPMessageVerifier:
    return HTTPMessageVerifier(signature_algorithm=algorithms.HMAC_SHA256, key_resolver=RESOLVER)


def _ts(now: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(now, datetime.UTC)


def _edge_message(url: str = "https://origin.example/orders?tenant=7", **headers: str) -> Message:
    base = {
        "X-Edge-Subject": "user-42",
        "X-Edge-Scopes": "orders:read orders:write",
        "X-Edge-Issuer": "https://idp.example",
        "Content-Type": "application/json",
    }
    base.update({k.replace("_", "-"): v for k, v in headers.items()})
    return Message("POST", url, base)


BODY = b'{"item":"keyboard","quantity":2}'


# --- theirs -> ours ----------------------------------------------------------------------


def test_their_signature_verifies_with_our_core() -> None:
    msg = _edge_message()
    now = int(time.time())
    _their_signer().sign(
        msg,
        key_id=KEYID,
        created=_ts(now),
        nonce="nonce-0001",
        covered_component_ids=EDGE,
        label="edge",
        body=BODY,
    )
    v = hs.verify_request(msg.ours(), RING, now=now, body=BODY, required_components=EDGE)
    assert v.label == "edge" and v.keyid == KEYID and v.nonce == "nonce-0001"
    assert v.covered["x-edge-scopes"] == "orders:read orders:write"
    assert v.digest_checked == ("sha-256",)


async def test_their_signature_verifies_with_the_origin_verifier_once() -> None:
    msg = _edge_message()
    now = int(time.time())
    _their_signer().sign(
        msg, key_id=KEYID, created=_ts(now), nonce="n-77", covered_component_ids=EDGE, body=BODY
    )
    store = MemoryNonceStore()
    identity = await verify_request(
        msg.method, msg.url, msg.headers, BODY, keyring=RING, nonce_store=store, now=now
    )
    assert identity.subject == "user-42"
    assert identity.scopes == ("orders:read", "orders:write")
    assert identity.issuer == "https://idp.example"
    assert identity.keyid == KEYID
    with pytest.raises(hs.SignatureRejected) as info:
        await verify_request(msg.method, msg.url, msg.headers, BODY, keyring=RING, nonce_store=store, now=now)
    assert info.value.reason == "replayed"


class _Sha512(ContentDigest):
    algorithm = "sha-512"


class _Sha512Signer(HTTPMessageSigner):
    content_digest_class = _Sha512


def test_their_sha512_digest_verifies_with_ours() -> None:
    msg = _edge_message()
    now = int(time.time())
    _Sha512Signer(signature_algorithm=algorithms.HMAC_SHA256, key_resolver=RESOLVER).sign(
        msg, key_id=KEYID, created=_ts(now), nonce="n", covered_component_ids=EDGE, body=BODY
    )
    assert msg.headers["Content-Digest"].startswith("sha-512=:")
    v = hs.verify_request(msg.ours(), RING, now=now, body=BODY, required_components=EDGE)
    assert v.digest_checked == ("sha-512",)
    with pytest.raises(hs.SignatureRejected) as info:
        hs.verify_request(msg.ours(), RING, now=now, body=BODY + b" ", required_components=EDGE)
    assert info.value.reason == "digest_mismatch"


DERIVED_CASES = [
    ("https://origin.example/orders?tenant=7", ("@method", "@target-uri", "@authority", "@path", "@query")),
    (
        "https://Origin.Example:443/a/b%20c?x=1&y=%2F",
        ("@authority", "@target-uri", "@request-target", "@scheme"),
    ),
    ("http://origin.example:8080/", ("@authority", "@scheme", "@path", "@query", "@target-uri")),
    ("https://origin.example", ("@path", "@target-uri", "@request-target", "@query")),
    ("https://origin.example/p?", ("@query", "@target-uri", "@request-target")),
    ("https://[2001:db8::1]:8443/v1", ("@authority", "@target-uri")),
]


@pytest.mark.parametrize(("url", "components"), DERIVED_CASES)
def test_derived_components_agree_theirs_to_ours(url: str, components: Sequence[str]) -> None:
    msg = Message("GET", url, {"X-Edge-Subject": "u"})
    now = int(time.time())
    _their_signer().sign(
        msg, key_id=KEYID, created=_ts(now), covered_component_ids=(*components, "x-edge-subject")
    )
    v = hs.verify_request(msg.ours(), RING, now=now, required_components=components)
    assert set(v.covered) == {*components, "x-edge-subject"}


@pytest.mark.parametrize(("url", "components"), DERIVED_CASES)
def test_derived_components_agree_ours_to_theirs(url: str, components: Sequence[str]) -> None:
    msg = Message("GET", url, {"X-Edge-Subject": "u"})
    now = int(time.time())
    signed = hs.sign_request(msg.ours(), RING, now=now, components=(*components, "x-edge-subject"))
    msg.headers.update(signed.items())
    [result] = _their_verifier().verify(msg, require_components=components)
    assert result.parameters["keyid"] == KEYID


def test_field_value_normalisation_agrees() -> None:
    msg = Message("GET", "https://origin.example/", {"X-Edge-Subject": "  padded value\t ", "X-Empty": ""})
    now = int(time.time())
    _their_signer().sign(
        msg, key_id=KEYID, created=_ts(now), covered_component_ids=("x-edge-subject", "x-empty")
    )
    v = hs.verify_request(msg.ours(), RING, now=now, required_components=())
    assert v.covered == {"x-edge-subject": "padded value", "x-empty": ""}


def test_expires_and_tag_from_theirs() -> None:
    msg = _edge_message()
    now = int(time.time())
    _their_signer().sign(
        msg,
        key_id=KEYID,
        created=_ts(now),
        expires=_ts(now + 60),
        nonce="n1",
        tag="edge-gateway",
        covered_component_ids=EDGE,
        body=BODY,
    )
    v = hs.verify_request(msg.ours(), RING, now=now + 59, body=BODY, tag="edge-gateway", clock_skew=0)
    assert v.params.expires == now + 60 and v.params.tag == "edge-gateway"
    with pytest.raises(hs.SignatureRejected) as info:
        hs.verify_request(msg.ours(), RING, now=now + 60, body=BODY, clock_skew=0)
    assert info.value.reason == "expired"


def test_appended_second_signature_selected_by_label() -> None:
    msg = _edge_message()
    now = int(time.time())
    signer = _their_signer()
    signer.sign(
        msg, key_id=KEYID, created=_ts(now), covered_component_ids=("@method",), label="first", tag="a"
    )
    signer.sign(
        msg,
        key_id=KEYID,
        created=_ts(now),
        covered_component_ids=("@target-uri", "x-edge-subject"),
        label="second",
        tag="b",
        append_if_signature_exists=True,
    )
    assert (
        hs.verify_request(msg.ours(), RING, now=now, label="second", required_components=()).label == "second"
    )
    assert hs.verify_request(msg.ours(), RING, now=now, tag="a", required_components=()).label == "first"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.headers.__setitem__("X-Edge-Subject", "admin"),
        lambda m: m.headers.__setitem__("X-Edge-Scopes", "orders:read orders:write admin"),
        lambda m: setattr(m, "method", "PUT"),
        lambda m: setattr(m, "url", m.url.replace("tenant=7", "tenant=8")),
        lambda m: m.headers.__setitem__("Content-Digest", hs.content_digest(b"{}")),
    ],
)
def test_tampering_after_their_signature_is_refused_by_ours(tamper: Any) -> None:
    msg = _edge_message()
    now = int(time.time())
    _their_signer().sign(
        msg, key_id=KEYID, created=_ts(now), nonce="n", covered_component_ids=EDGE, body=BODY
    )
    tamper(msg)
    with pytest.raises(hs.SignatureRejected) as info:
        hs.verify_request(msg.ours(), RING, now=now, required_components=EDGE)
    assert info.value.reason == "bad_signature"


# --- ours -> theirs ----------------------------------------------------------------------


def _our_signed(msg: Message, body: bytes, *, now: int, algorithms_: Sequence[str] = ("sha-256",)) -> Message:
    msg.headers["Content-Digest"] = hs.content_digest(body, algorithms_)
    signed = hs.sign_request(msg.ours(), RING, now=now, components=EDGE, tag="edge-gateway")
    msg.headers.update(signed.items())
    return msg


@pytest.mark.parametrize("digest_algorithms", [("sha-256",), ("sha-512",), ("sha-256", "sha-512")])
def test_our_signature_verifies_with_theirs(digest_algorithms: Sequence[str]) -> None:
    now = int(time.time())
    msg = _our_signed(_edge_message(), BODY, now=now, algorithms_=digest_algorithms)
    [result] = _their_verifier().verify(msg, require_components=EDGE, body=BODY, expect_tag="edge-gateway")
    assert result.parameters["keyid"] == KEYID
    assert result.parameters["alg"] == "hmac-sha256"
    assert result.nonce and len(result.nonce) >= 16
    assert result.body == BODY


def test_theirs_refuses_our_signature_when_tampered() -> None:
    now = int(time.time())
    msg = _our_signed(_edge_message(), BODY, now=now)
    msg.headers["X-Edge-Subject"] = "admin"
    with pytest.raises(InvalidSignature):
        _their_verifier().verify(msg, require_components=EDGE)
    msg = _our_signed(_edge_message(), BODY, now=now)
    with pytest.raises(InvalidSignature):
        _their_verifier().verify(msg, require_components=EDGE, body=BODY + b"!")


def test_theirs_refuses_our_signature_with_another_key() -> None:
    now = int(time.time())
    msg = _edge_message()
    msg.headers["Content-Digest"] = hs.content_digest(BODY)
    other = hs.HmacKey(KEYID, b"x" * 32)  # same keyid, different secret
    msg.headers.update(hs.sign_request(msg.ours(), RING, now=now, components=EDGE, key=other).items())
    with pytest.raises(InvalidSignature):
        _their_verifier().verify(msg, require_components=EDGE)


def test_rfc9421_b25_verifies_with_both() -> None:
    secret = base64.b64decode(
        "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ=="
    )
    msg = Message(
        "POST",
        "https://example.com/foo?param=Value&Pet=dog",
        {
            "Host": "example.com",
            "Date": "Tue, 20 Apr 2021 02:07:55 GMT",
            "Content-Type": "application/json",
            "Content-Length": "18",
            "Signature-Input": 'sig-b25=("date" "@authority" "content-type");created=1618884473'
            ';keyid="test-shared-secret"',
            "Signature": "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:",
        },
    )
    resolver = MappingKeyResolver(
        public_keys={"test-shared-secret": secret}, private_keys={"test-shared-secret": secret}
    )
    verifier = HTTPMessageVerifier(signature_algorithm=algorithms.HMAC_SHA256, key_resolver=resolver)
    [theirs] = verifier.verify(msg, max_age=None)
    ours = hs.verify_request(
        msg.ours(),
        hs.Keyring([hs.HmacKey("test-shared-secret", secret)]),
        now=1618884473,
        required_components=(),
    )
    assert {
        k.strip('"'): v for k, v in theirs.covered_components.items() if k != '"@signature-params"'
    } == dict(ours.covered)


# --- both directions on random requests --------------------------------------------------

_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=40).filter(
    lambda s: s.strip() == s and s.strip() != ""
)
_SEG = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~", min_size=1, max_size=10)


@st.composite
def _messages(draw: st.DrawFn) -> tuple[Message, bytes]:
    path = "/" + "/".join(draw(st.lists(_SEG, min_size=0, max_size=3)))
    query = "&".join(f"{k}={v}" for k, v in draw(st.lists(st.tuples(_SEG, _SEG), max_size=3)))
    url = "https://origin.example" + path + (f"?{query}" if query else "")
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
    headers = {
        "X-Edge-Subject": draw(_TEXT),
        "X-Edge-Scopes": draw(_TEXT),
        "X-Edge-Issuer": draw(_TEXT),
    }
    return Message(method, url, headers), draw(st.binary(max_size=300))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(_messages(), st.booleans())
def test_random_requests_interoperate_both_ways(case: tuple[Message, bytes], theirs_sign: bool) -> None:
    msg, body = case
    now = int(time.time())
    if theirs_sign:
        _their_signer().sign(
            msg, key_id=KEYID, created=_ts(now), nonce="n-1", covered_component_ids=EDGE, body=body
        )
        hs.verify_request(msg.ours(), RING, now=now, body=body, required_components=EDGE)
    else:
        _our_signed(msg, body, now=now)
        _their_verifier().verify(msg, require_components=EDGE, body=body, expect_tag="edge-gateway")


def test_default_policy_matches_what_theirs_signs_for_the_edge() -> None:
    assert SignaturePolicy().required_components == EDGE
