"""RFC 9421 signatures and RFC 9530 digests in core: published vectors, unhappy paths,
properties. Edge-safe (stdlib + pytest + hypothesis): re-run inside Pyodide."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_kv.core.errors import EdgeKvError, InvalidInput
from edge_kv.core.httpsig import (
    REASONS,
    Component,
    HmacKey,
    HttpRequest,
    Keyring,
    MalformedField,
    SfInnerList,
    SfItem,
    SignatureParams,
    SignatureRejected,
    Token,
    component_value,
    content_digest,
    parse_content_digest,
    parse_dictionary,
    parse_signature,
    parse_signature_input,
    serialize_dictionary,
    serialize_signature_input,
    sign_params,
    sign_request,
    signature_base,
    verify_content_digest,
    verify_request,
)

pytestmark = pytest.mark.edge_safe

# --- RFC 9421 Appendix B.1.5 / B.2 test material ----------------------------------------

SHARED_SECRET = base64.b64decode(
    "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ=="
)
B2_BODY = b'{"hello": "world"}'
B2_DIGEST = (
    "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
)
B2_REQUEST = HttpRequest.build(
    "POST",
    "https://example.com/foo?param=Value&Pet=dog",
    [
        ("Host", "example.com"),
        ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
        ("Content-Type", "application/json"),
        ("Content-Digest", B2_DIGEST),
        ("Content-Length", "18"),
    ],
)
B25_INPUT = 'sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"'
B25_SIGNATURE = "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:"
B25_BASE = (
    '"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    '"@authority": example.com\n'
    '"content-type": application/json\n'
    '"@signature-params": ("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"'
)
CREATED = 1618884473
RFC_KEYRING = Keyring([HmacKey("test-shared-secret", SHARED_SECRET)])

SECRET_A = b"a" * 32
SECRET_B = bytes(range(48))


def b25_signed() -> HttpRequest:
    return B2_REQUEST.with_headers([("Signature-Input", B25_INPUT), ("Signature", B25_SIGNATURE)])


def test_b25_signature_base_is_byte_identical() -> None:
    params = parse_signature_input(B25_INPUT)["sig-b25"]
    assert signature_base(B2_REQUEST, params) == B25_BASE.encode("ascii")


def test_b25_our_signer_reproduces_the_published_signature() -> None:
    params = SignatureParams.create(
        ["date", "@authority", "content-type"], created=CREATED, keyid="test-shared-secret"
    )
    signed = sign_params(B2_REQUEST, params, HmacKey("test-shared-secret", SHARED_SECRET), label="sig-b25")
    assert signed.signature_input == B25_INPUT
    assert signed.signature == B25_SIGNATURE


def test_b25_published_signature_verifies() -> None:
    result = verify_request(
        b25_signed(),
        RFC_KEYRING,
        now=CREATED + 5,
        required_components=(),
        required_params=("created",),
    )
    assert result.label == "sig-b25"
    assert result.keyid == "test-shared-secret"
    assert result.covered == {
        "date": "Tue, 20 Apr 2021 02:07:55 GMT",
        "@authority": "example.com",
        "content-type": "application/json",
    }


def test_b25_one_changed_header_breaks_it() -> None:
    tampered = b25_signed().with_headers([("Content-Type", "application/xml")])
    with pytest.raises(SignatureRejected) as info:
        verify_request(tampered, RFC_KEYRING, now=CREATED, required_components=())
    assert info.value.reason == "bad_signature"
    assert info.value.status == 401


def test_b21_minimal_base() -> None:
    params = parse_signature_input(
        'sig-b21=();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd"'
    )["sig-b21"]
    assert signature_base(B2_REQUEST, params) == (
        b'"@signature-params": ();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd"'
    )


def test_b23_full_coverage_base() -> None:
    params = parse_signature_input(
        'sig-b23=("date" "@method" "@path" "@query" "@authority" "content-type" "content-digest" '
        '"content-length");created=1618884473;keyid="test-key-rsa-pss"'
    )["sig-b23"]
    expected = "\n".join(
        [
            '"date": Tue, 20 Apr 2021 02:07:55 GMT',
            '"@method": POST',
            '"@path": /foo',
            '"@query": ?param=Value&Pet=dog',
            '"@authority": example.com',
            '"content-type": application/json',
            f'"content-digest": {B2_DIGEST}',
            '"content-length": 18',
            '"@signature-params": ("date" "@method" "@path" "@query" "@authority" "content-type" '
            '"content-digest" "content-length");created=1618884473;keyid="test-key-rsa-pss"',
        ]
    )
    assert signature_base(B2_REQUEST, params) == expected.encode("ascii")


def test_b22_query_param_component_is_refused_not_guessed() -> None:
    with pytest.raises(MalformedField):
        parse_signature_input(
            'sig-b22=("@authority" "content-digest" "@query-param";name="Pet");created=1618884473'
            ';keyid="test-key-rsa-pss";tag="header-example"'
        )


# --- RFC 9421 §2.1 (fields) and §2.2 (derived components) -------------------------------

S21_REQUEST = HttpRequest.build(
    "GET",
    "https://www.example.com/xyz",
    [
        ("Host", "www.example.com"),
        ("Date", "Tue, 20 Apr 2021 02:07:56 GMT"),
        ("X-OWS-Header", "   Leading and trailing whitespace.   "),
        ("X-Obs-Fold-Header", "Obsolete\r\n    line folding."),
        ("Cache-Control", "max-age=60"),
        ("X-Empty-Header", ""),
        ("Cache-Control", "   must-revalidate"),
        ("Example-Dict", " a=1,    b=2;x=1;y=2,   c=(a   b   c)  "),
    ],
)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("host", "www.example.com"),
        ("date", "Tue, 20 Apr 2021 02:07:56 GMT"),
        ("x-ows-header", "Leading and trailing whitespace."),
        ("x-obs-fold-header", "Obsolete line folding."),
        ("cache-control", "max-age=60, must-revalidate"),
        ("example-dict", "a=1,    b=2;x=1;y=2,   c=(a   b   c)"),
        ("x-empty-header", ""),
        ("Cache-Control", "max-age=60, must-revalidate"),  # names are lowercased
    ],
)
def test_rfc9421_section_2_1_field_values(name: str, value: str) -> None:
    assert component_value(name, S21_REQUEST) == value


def test_empty_field_keeps_the_space_after_the_colon() -> None:
    params = SignatureParams.create(["x-empty-header"])
    assert signature_base(S21_REQUEST, params).split(b"\n")[0] == b'"x-empty-header": '


S22 = HttpRequest.build("POST", "https://www.example.com/path?param=value", [("Host", "www.example.com")])


@pytest.mark.parametrize(
    ("component", "request_", "value"),
    [
        ("@method", S22, "POST"),
        ("@target-uri", S22, "https://www.example.com/path?param=value"),
        ("@authority", S22, "www.example.com"),
        ("@scheme", S22, "https"),
        ("@request-target", S22, "/path?param=value"),
        ("@path", S22, "/path"),
        ("@query", S22, "?param=value"),
        (
            "@query",
            HttpRequest("POST", "https://www.example.com/path?param=value&foo=bar&baz=bat%2Dman"),
            "?param=value&foo=bar&baz=bat%2Dman",
        ),
        ("@query", HttpRequest("GET", "https://www.example.com/path"), "?"),
        ("@query", HttpRequest("GET", "https://www.example.com/path?"), "?"),
        ("@scheme", HttpRequest("GET", "http://www.example.com/"), "http"),
        ("@authority", HttpRequest("GET", "https://WWW.Example.com:443/"), "www.example.com"),
        ("@authority", HttpRequest("GET", "http://example.com:80/"), "example.com"),
        ("@authority", HttpRequest("GET", "https://example.com:8443/"), "example.com:8443"),
        ("@authority", HttpRequest("GET", "https://[2001:db8::1]:443/"), "[2001:db8::1]"),
        ("@path", HttpRequest("GET", "https://example.com"), "/"),
        ("@path", HttpRequest("GET", "https://example.com/a%20b/c"), "/a%20b/c"),
        ("@target-uri", HttpRequest("GET", "https://example.com"), "https://example.com/"),
        ("@target-uri", HttpRequest("GET", "https://example.com/a?b=c#frag"), "https://example.com/a?b=c"),
        ("@request-target", HttpRequest("GET", "https://example.com"), "/"),
    ],
)
def test_rfc9421_section_2_2_derived_components(component: str, request_: HttpRequest, value: str) -> None:
    assert component_value(component, request_) == value


@pytest.mark.parametrize(
    "url",
    [
        "/relative/path",
        "ftp://example.com/",
        "https://user:pw@example.com/",
        "https://exa mple.com/",
        "https://example.com/é",
        "https://example.com/a b",
        "",
    ],
)
def test_unusable_target_uris_are_malformed(url: str) -> None:
    with pytest.raises(MalformedField):
        component_value("@target-uri", HttpRequest("GET", url))


@pytest.mark.parametrize(
    ("request_", "component"),
    [
        (S22, "x-missing"),  # covered field absent
        (HttpRequest("GET", "https://e.x/", (("X-A", "caf\u00e9"),)), "x-a"),  # non-ASCII
        (HttpRequest("GET", "https://e.x/", (("X-A", "a\nb"),)), "x-a"),  # bare LF
        (HttpRequest("GET", "https://e.x/", (("X-A", "a\x00b"),)), "x-a"),  # control
        (HttpRequest("G ET", "https://e.x/"), "@method"),
        (S22, "@status"),  # responses are not supported
        (S22, "@unknown"),
        (S22, "X Bad Name"),
    ],
)
def test_component_values_that_cannot_be_signed(request_: HttpRequest, component: str) -> None:
    with pytest.raises(MalformedField) as info:
        component_value(component, request_)
    assert isinstance(info.value, InvalidInput)
    assert info.value.status == 400


# --- Structured fields --------------------------------------------------------------------


def test_signature_input_round_trips() -> None:
    assert serialize_signature_input(parse_signature_input(B25_INPUT)) == B25_INPUT


def test_parse_tolerates_ows_between_members_and_missing_padding() -> None:
    parsed = parse_dictionary('a=1,\tb="x" ,  c=:AQID:, d=?0, e=tok/en, f=-1.5;p', "X")
    assert parsed["a"] == SfItem(1)
    assert parsed["b"] == SfItem("x")
    assert parsed["c"] == SfItem(b"\x01\x02\x03")
    assert parsed["d"] == SfItem(False)
    assert parsed["e"] == SfItem(Token("tok/en")) and isinstance(parsed["e"].value, Token)
    assert parsed["f"].params == (("p", True),)
    assert parse_dictionary("a=:AQI:", "X")["a"] == SfItem(b"\x01\x02")  # unpadded base64


def test_serialize_dictionary_bare_true_and_inner_lists() -> None:
    members: dict[str, SfItem | SfInnerList] = {
        "flag": SfItem(True, (("k", "v"),)),
        "l": SfInnerList((SfItem("a"), SfItem(2, (("x", Token("y")),))), (("p", 1),)),
    }
    text = serialize_dictionary(members)
    assert text == 'flag;k="v", l=("a" 2;x=y);p=1'
    assert parse_dictionary(text) == members


@pytest.mark.parametrize(
    "value",
    [
        'sig1=("@method"',  # unterminated inner list
        'sig1=("@method");created=1,',  # trailing comma
        'sig1=("@method");created="1"',  # created not an integer
        'sig1=("@method");created=-1',  # negative created
        'sig1=("@method");created=1.5',  # decimal created
        'sig1=("@method");keyid=k1',  # token where a string is due
        'sig1=("@method");unknown="x"',  # unknown parameter
        'sig1=("@method");keyid="a";keyid="b"',  # repeated parameter
        'sig1=("@method"), sig1=("@path")',  # repeated label
        'sig1=("@method" "@method")',  # component twice
        'sig1=("@Method")',  # not lowercase
        'sig1=("Content-Type")',
        "sig1=(@method)",  # component as token
        'sig1="@method"',  # not an inner list
        'sig1=("@method")x',
        'Sig1=("@method")',  # label must start lowercase
        'sig1=("@method" "a\\nb")',  # bad escape
        'sig1=("@méthod")',  # non-ASCII
        'sig1=("@method");created=1234567890123456',  # 16-digit integer
        'sig1=("content-type";sf)',  # component parameters are not supported
        'sig1=("@method");nonce=""',  # empty nonce
    ],
)
def test_malformed_signature_input(value: str) -> None:
    with pytest.raises(MalformedField) as info:
        parse_signature_input(value)
    assert isinstance(info.value, InvalidInput)
    assert info.value.field_name == "Signature-Input"


@pytest.mark.parametrize(
    "value",
    [
        "sig1=:not base64!:",
        "sig1=:AAAA",  # unterminated
        'sig1="AAAA"',  # string, not bytes
        "sig1=:AAAA:;p=1",  # parameters on the signature
        "sig1=(:AAAA:)",
        "sig1=:A:",  # impossible base64 length
    ],
)
def test_malformed_signature(value: str) -> None:
    with pytest.raises(MalformedField):
        parse_signature(value)


@given(st.text(max_size=80))
def test_parsers_raise_only_malformed_field(text: str) -> None:
    for parse in (parse_signature_input, parse_signature, parse_content_digest):
        with contextlib.suppress(MalformedField):
            parse(text)


@given(st.text(alphabet='sig1=(@"methodpa);,:=AQ?01 -.*\\ncreatd', max_size=60))
def test_parsers_raise_only_malformed_field_on_near_misses(text: str) -> None:
    for parse in (parse_signature_input, parse_signature, parse_content_digest):
        with contextlib.suppress(MalformedField):
            parse(text)


# --- RFC 9530 Content-Digest ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "algorithms", "expected"),
    [
        (b'{"hello": "world"}\n', ["sha-256"], "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"),
        (
            b'{"hello": "world"}\n',
            ["sha-512"],
            "sha-512=:YMAam51Jz/jOATT6/zvHrLVgOYTGFy1d6GJiOHTohq4yP+pgk4vf2aCsyRZOtw8MjkM7iw7yZ/WkppmM44T3qg==:",
        ),
        (b"", ["sha-256"], "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"),
        (b'"world"}\n', ["sha-256"], "sha-256=:jjcgBDWNAtbYUXI37CVG3gRuGOAjaaDRGpIUFsdyepQ=:"),
        (B2_BODY, ["sha-512"], B2_DIGEST),  # RFC 9421's test request
        (B2_BODY, ["sha-256"], "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"),
    ],
)
def test_rfc9530_examples(body: bytes, algorithms: list[str], expected: str) -> None:
    assert content_digest(body, algorithms) == expected
    assert verify_content_digest(expected, body) == algorithms


def test_digest_with_both_algorithms_checks_both() -> None:
    value = content_digest(b"x", ["sha-256", "sha-512"])
    assert verify_content_digest(value, b"x") == ["sha-256", "sha-512"]
    # one right, one wrong: refused
    wrong = value.split(", ")[0] + ", " + content_digest(b"y", ["sha-512"])
    with pytest.raises(SignatureRejected) as info:
        verify_content_digest(wrong, b"x")
    assert info.value.reason == "digest_mismatch"


def test_digest_unknown_algorithms_are_ignored_but_one_known_is_needed() -> None:
    sha = content_digest(b"x")
    assert verify_content_digest("md5=:AAAA:, " + sha, b"x") == ["sha-256"]
    for value in ("md5=:AAAA:", "unixsum=:AAAA:", ""):
        with pytest.raises(SignatureRejected):
            verify_content_digest(value, b"x")


@pytest.mark.parametrize("value", ["sha-256=abc", "sha-256=:abc", "sha-256", 'sha-256="X48E9q"'])
def test_digest_malformed(value: str) -> None:
    with pytest.raises(MalformedField):
        verify_content_digest(value, b"")


def test_digest_refuses_bad_arguments() -> None:
    with pytest.raises(InvalidInput):
        content_digest(b"x", ["md5"])
    with pytest.raises(InvalidInput):
        content_digest(b"x", [])
    with pytest.raises(InvalidInput):
        content_digest("x", ["sha-256"])  # type: ignore[arg-type]


# --- Keys and rotation -------------------------------------------------------------------


def test_signer_uses_the_newest_activated_key_and_verifier_accepts_all() -> None:
    ring = Keyring(
        [
            HmacKey("k-2024", SECRET_A, activated_at=100),
            HmacKey("k-2025", SECRET_B, activated_at=200),
            HmacKey("k-next", b"n" * 32, activated_at=10_000),  # distributed, not yet used
        ]
    )
    req = _request()
    assert sign_request(req, ring, now=150).params.keyid == "k-2024"
    signed = sign_request(req, ring, now=500)
    assert signed.params.keyid == "k-2025"
    assert verify_request(req.with_headers(signed.items()), ring, now=500, body=b"{}").keyid == "k-2025"
    # A request signed with the older key still verifies (rotation overlap).
    old = sign_request(req, ring, now=500, key=HmacKey("k-2024", SECRET_A, activated_at=100))
    assert verify_request(req.with_headers(old.items()), ring, now=500, body=b"{}").keyid == "k-2024"
    # The pre-distributed key verifies before signers use it.
    nxt = sign_request(req, ring, now=500, key=HmacKey("k-next", b"n" * 32, activated_at=10_000))
    assert verify_request(req.with_headers(nxt.items()), ring, now=500, body=b"{}").keyid == "k-next"


def test_retired_key_is_refused_and_never_signs() -> None:
    ring = Keyring([HmacKey("old", SECRET_A, activated_at=0, retired_at=1000), HmacKey("new", SECRET_B, 500)])
    req = _request()
    signed = sign_request(req, ring, now=400)
    assert signed.params.keyid == "old"
    with pytest.raises(SignatureRejected) as info:
        verify_request(req.with_headers(signed.items()), ring, now=1000, max_age=10_000)
    assert info.value.reason == "unknown_key"
    assert sign_request(req, ring, now=1000).params.keyid == "new"


@pytest.mark.parametrize(
    "make",
    [
        lambda: HmacKey("k", b"short"),
        lambda: HmacKey("", SECRET_A),
        lambda: HmacKey("k\n", SECRET_A),
        lambda: HmacKey("kä", SECRET_A),
        lambda: HmacKey("k", "a" * 32),  # type: ignore[arg-type]
        lambda: HmacKey("k", SECRET_A, activated_at=-1),
        lambda: HmacKey("k", SECRET_A, activated_at=True),
        lambda: HmacKey("k", SECRET_A, activated_at=10, retired_at=10),
        lambda: Keyring([]),
        lambda: Keyring([HmacKey("k", SECRET_A), HmacKey("k", SECRET_B)]),
        lambda: Keyring(["k"]),  # type: ignore[list-item]
        lambda: Keyring([HmacKey("k", SECRET_A, activated_at=10)]).signing_key(5),
    ],
)
def test_bad_key_configuration(make: object) -> None:
    with pytest.raises(InvalidInput):
        make()  # type: ignore[operator]


def test_key_repr_does_not_leak_the_secret() -> None:
    assert "aaaa" not in repr(HmacKey("k", SECRET_A))


# --- verify_request: every refusal names its reason --------------------------------------

NOW = 1_700_000_000
RING = Keyring([HmacKey("edge-1", SECRET_A)])
EDGE_COMPONENTS = ("@method", "@target-uri", "content-digest", "x-edge-subject")


def _request(body: bytes = b"{}", subject: str = "user-1") -> HttpRequest:
    return HttpRequest.build(
        "POST",
        "https://origin.example/orders?x=1",
        [
            ("Content-Type", "application/json"),
            ("X-Edge-Subject", subject),
            ("Content-Digest", content_digest(body)),
        ],
    )


def _signed(req: HttpRequest | None = None, *, now: int = NOW, **kw: object) -> HttpRequest:
    req = req or _request()
    signed = sign_request(req, RING, now=now, components=EDGE_COMPONENTS, **kw)  # type: ignore[arg-type]
    return req.with_headers(signed.items())


def _reason(req: HttpRequest, **kw: object) -> str:
    kw.setdefault("now", NOW)
    kw.setdefault("body", b"{}")
    kw.setdefault("required_components", EDGE_COMPONENTS)
    with pytest.raises(SignatureRejected) as info:
        verify_request(req, RING, **kw)  # type: ignore[arg-type]
    assert info.value.reason in REASONS
    assert info.value.status == 401
    assert isinstance(info.value, EdgeKvError)
    return info.value.reason


def test_accepts_a_fresh_signature() -> None:
    v = verify_request(_signed(), RING, now=NOW + 3, body=b"{}", required_components=EDGE_COMPONENTS)
    assert v.covered["x-edge-subject"] == "user-1"
    assert v.covered["@method"] == "POST"
    assert v.digest_checked == ("sha-256",)
    assert v.created == NOW
    assert v.nonce and len(v.nonce) >= 16
    assert v.params.alg == "hmac-sha256"


def test_missing_signature() -> None:
    assert _reason(_request()) == "missing"
    assert _reason(_request().with_headers([("Signature-Input", 'sig1=("@method")')])) == "missing"


def test_malformed_signature_is_a_401_reason() -> None:
    req = _signed().with_headers([("Signature", "sig1=:%%%:")])
    assert _reason(req) == "malformed"


def test_labels_must_agree() -> None:
    req = _signed()
    sig = req.header("signature")
    assert sig is not None
    assert _reason(req.with_headers([("Signature", sig.replace("sig1=", "sig2="))])) == "malformed"


def test_tampered_header_method_uri_body() -> None:
    good = _signed()
    assert _reason(good.with_headers([("X-Edge-Subject", "admin")])) == "bad_signature"
    # a second field line changes the combined value
    assert _reason(good.with_headers([("X-Edge-Subject", "admin")], replace=False)) == "bad_signature"
    assert _reason(HttpRequest("PUT", good.url, good.headers)) == "bad_signature"
    assert _reason(HttpRequest(good.method, good.url.replace("x=1", "x=2"), good.headers)) == "bad_signature"
    assert _reason(good, body=b'{"a":1}') == "digest_mismatch"


def test_stale_future_and_expired() -> None:
    assert _reason(_signed(now=NOW - 301), max_age=300) == "expired"
    verify_request(_signed(now=NOW - 300), RING, now=NOW, max_age=300, body=b"{}")
    assert _reason(_signed(now=NOW + 31), clock_skew=30) == "not_yet_valid"
    verify_request(_signed(now=NOW + 30), RING, now=NOW, clock_skew=30, body=b"{}")
    assert _reason(_signed(now=NOW - 100, expires_in=10), clock_skew=0) == "expired"


def test_required_components_and_params() -> None:
    assert (
        _reason(_signed(), required_components=(*EDGE_COMPONENTS, "x-edge-scopes")) == "insufficient_coverage"
    )
    req = _request()
    signed = sign_request(req, RING, now=NOW, components=("@method",))
    assert _reason(req.with_headers(signed.items())) == "insufficient_coverage"
    assert _reason(_signed(), required_params=("created", "tag")) == "insufficient_coverage"


def test_body_must_be_covered_by_a_digest() -> None:
    req = _request()
    signed = sign_request(req, RING, now=NOW, components=("@method", "@target-uri"))
    r = req.with_headers(signed.items())
    assert _reason(r, required_components=()) == "insufficient_coverage"
    # an empty body needs no digest
    verify_request(r, RING, now=NOW, body=b"", required_components=())


def test_unknown_keyid_and_wrong_algorithm() -> None:
    req = _request()
    other = HmacKey("stranger", SECRET_B)
    signed = sign_request(req, RING, now=NOW, components=EDGE_COMPONENTS, key=other)
    assert _reason(req.with_headers(signed.items())) == "unknown_key"
    params = SignatureParams(
        tuple(Component.of(c) for c in EDGE_COMPONENTS),
        (("created", NOW), ("keyid", "edge-1"), ("alg", "rsa-pss-sha512")),
    )
    mac = hmac.new(SECRET_A, signature_base(req, params), hashlib.sha256).digest()
    forged = req.with_headers(
        [
            ("Signature-Input", serialize_signature_input({"sig1": params})),
            ("Signature", "sig1=:" + base64.b64encode(mac).decode() + ":"),
        ]
    )
    assert _reason(forged) == "wrong_algorithm"


def test_selection_by_label_and_tag() -> None:
    req = _request()
    a = sign_request(req, RING, now=NOW, components=EDGE_COMPONENTS, label="edge", tag="edge-gw")
    b = sign_request(req, RING, now=NOW, components=("@method",), label="other", tag="other")
    both = req.with_headers(
        [
            ("Signature-Input", a.signature_input + ", " + b.signature_input),
            ("Signature", a.signature + ", " + b.signature),
        ]
    )
    assert _reason(both) == "malformed"  # ambiguous without label or tag
    assert verify_request(both, RING, now=NOW, body=b"{}", tag="edge-gw").label == "edge"
    assert verify_request(both, RING, now=NOW, body=b"{}", label="edge").label == "edge"
    assert _reason(both, label="other") == "insufficient_coverage"
    assert _reason(both, label="nope") == "missing"
    assert _reason(both, tag="nope") == "missing"


def test_signature_headers_split_over_several_field_lines() -> None:
    req = _request()
    a = sign_request(req, RING, now=NOW, components=EDGE_COMPONENTS, label="a")
    b = sign_request(req, RING, now=NOW, components=EDGE_COMPONENTS, label="b")
    lines = [
        ("Signature-Input", a.signature_input),
        ("Signature-Input", b.signature_input),
        ("Signature", b.signature),
        ("Signature", a.signature),
    ]
    assert verify_request(req.with_headers(lines), RING, now=NOW, body=b"{}", label="b").label == "b"


def test_sign_refuses_bad_arguments() -> None:
    req = _request()
    with pytest.raises(InvalidInput):
        sign_request(req, RING, now=-1)
    with pytest.raises(InvalidInput):
        sign_request(req, RING, now=NOW, expires_in=0)
    with pytest.raises(InvalidInput):
        sign_request(req, RING, now=NOW, label="Bad Label")
    with pytest.raises(MalformedField):
        sign_request(req, RING, now=NOW, components=("x-absent",))
    with pytest.raises(InvalidInput):
        sign_params(req, SignatureParams.create(["@method"], keyid="other"), HmacKey("edge-1", SECRET_A))


# --- Properties -----------------------------------------------------------------------------

_VALUE_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
_PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"


@st.composite
def signed_requests(draw: st.DrawFn) -> tuple[HttpRequest, bytes]:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]))
    path = "/" + draw(st.text(alphabet=_PATH_CHARS, min_size=1, max_size=20))
    query = draw(st.text(alphabet=_PATH_CHARS + "=&", max_size=20))
    url = f"https://origin.example{path}" + (f"?{query}" if query else "")
    subject = draw(st.text(alphabet=_VALUE_CHARS, min_size=1, max_size=30))
    scopes = " ".join(draw(st.lists(st.text(alphabet=_PATH_CHARS, min_size=1, max_size=8), max_size=4)))
    body = draw(st.binary(max_size=200))
    headers = [
        ("X-Edge-Subject", subject),
        ("X-Edge-Scopes", scopes or "none"),
        ("Content-Digest", content_digest(body, draw(st.sampled_from([["sha-256"], ["sha-512"]])))),
    ]
    return HttpRequest.build(method, url, headers), body


PROPERTY_COMPONENTS = ("@method", "@target-uri", "content-digest", "x-edge-subject", "x-edge-scopes")


@given(
    signed_requests(), st.integers(min_value=0, max_value=2**40), st.text(alphabet=_PATH_CHARS, min_size=1)
)
def test_sign_then_verify_round_trips(case: tuple[HttpRequest, bytes], now: int, nonce: str) -> None:
    req, body = case
    signed = sign_request(req, RING, now=now, components=PROPERTY_COMPONENTS, nonce=nonce)
    v = verify_request(
        req.with_headers(signed.items()), RING, now=now, body=body, required_components=PROPERTY_COMPONENTS
    )
    assert v.nonce == nonce
    assert v.covered["x-edge-subject"] == req.header("x-edge-subject")


def _mutate(text: str, index: int, replacement: str) -> str:
    i = index % len(text)
    if replacement == text[i]:
        replacement = "A" if text[i] != "A" else "B"
    return text[:i] + replacement + text[i + 1 :]


@given(
    signed_requests(),
    st.sampled_from(["@method", "@target-uri", "x-edge-subject", "x-edge-scopes", "body"]),
    st.integers(min_value=0, max_value=10_000),
    st.sampled_from(list(_PATH_CHARS)),
)
def test_any_single_byte_change_in_a_covered_component_fails(
    case: tuple[HttpRequest, bytes], target: str, index: int, replacement: str
) -> None:
    req, body = case
    signed = req.with_headers(sign_request(req, RING, now=NOW, components=PROPERTY_COMPONENTS).items())
    if target == "body":
        if not body:
            body = b"x"  # an empty body's digest covers "no content": adding one byte is a change
        else:
            i = index % len(body)
            body = body[:i] + bytes([body[i] ^ (1 + index % 255)]) + body[i + 1 :]
        expected = "digest_mismatch"
    elif target == "@method":
        signed = HttpRequest(_mutate(signed.method, index, replacement.upper()), signed.url, signed.headers)
        expected = "bad_signature"
    elif target == "@target-uri":
        # mutate after the scheme so the URL stays an absolute https URL
        prefix = "https://"
        rest = _mutate(signed.url[len(prefix) :], index, replacement)
        signed = HttpRequest(signed.method, prefix + rest, signed.headers)
        expected = "bad_signature"
    else:
        value = signed.header(target)
        assert value
        signed = signed.with_headers([(target, _mutate(value, index, replacement))])
        expected = "bad_signature"
    with pytest.raises(SignatureRejected) as info:
        verify_request(signed, RING, now=NOW, body=body, required_components=PROPERTY_COMPONENTS)
    assert info.value.reason == expected


def test_keyring_from_secrets_newest_is_last() -> None:
    ring = Keyring.from_secrets({"k-2025": SECRET_A, "k-2026": SECRET_B})
    assert ring.keyids() == ["k-2025", "k-2026"] and len(ring) == 2 and "k-2025" in ring
    assert ring.signing_key(10).keyid == "k-2026"
    assert ring.for_verify("k-2025", 10) is not None and ring.for_verify("nope", 10) is None
