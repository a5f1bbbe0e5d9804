"""RFC 9421 HTTP Message Signatures (``hmac-sha256``) and RFC 9530 ``Content-Digest``.

Written once, used on both sides: the edge signs what it forwards, the origin verifies
(``edge_kv.origin.httpsig`` adds the replay store and the ASGI middleware). Pure
functions, standard library only, so this module also runs inside Pyodide: time is
passed in (``now``, whole seconds since the epoch), a nonce is passed in or drawn from
:mod:`secrets`.

What is covered
---------------

* **Signature base** (RFC 9421 §2.5) for requests: the derived components ``@method``,
  ``@target-uri``, ``@authority``, ``@scheme``, ``@request-target``, ``@path``,
  ``@query`` (§2.2) and HTTP fields by lowercased name (§2.1: each field line's value
  trimmed, obsolete line folding replaced by one space, several lines joined with
  ``", "``), then the ``@signature-params`` line. Component parameters (``sf``,
  ``key``, ``bs``, ``req``, ``tr``, ``@query-param``) and responses are not supported
  and are refused, never guessed.
* **Signature parameters** ``created``, ``expires``, ``nonce``, ``keyid``, ``alg``,
  ``tag`` (§2.3); any other parameter is refused.
* **Structured fields** (RFC 8941): the subset these fields need, dictionaries whose
  members are items or inner lists with parameters; bare items integer, decimal,
  string, token, byte sequence, boolean. Stricter than RFC 8941 in one way: a repeated
  dictionary key or parameter is refused instead of "last one wins", because an
  ambiguous ``Signature-Input`` is an attack surface.
* **hmac-sha256** (§3.3.3): the key is fixed per ``keyid`` by a :class:`Keyring`; an
  ``alg`` parameter, when present, must say ``hmac-sha256``; comparison is
  :func:`hmac.compare_digest`.
* **Content-Digest** (RFC 9530) with ``sha-256`` and ``sha-512``.

Errors: malformed fields raise :class:`MalformedField` (an
:class:`~edge_kv.core.errors.InvalidInput`, 400); a signature that does not verify raises
:class:`SignatureRejected` (401) whose ``reason`` is one of the ``REASON_*`` names.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Union

from edge_kv.core.errors import EdgeKvError, InvalidInput

__all__ = [
    "ALGORITHM",
    "DEFAULT_COMPONENTS",
    "DERIVED_COMPONENTS",
    "DIGEST_ALGORITHMS",
    "REASONS",
    "SIGNATURE_PARAMETERS",
    "Component",
    "HmacKey",
    "HttpRequest",
    "Keyring",
    "MalformedField",
    "SfInnerList",
    "SfItem",
    "SignatureParams",
    "SignatureRejected",
    "SignedHeaders",
    "Token",
    "VerifiedSignature",
    "check_component",
    "component_value",
    "content_digest",
    "new_nonce",
    "parse_content_digest",
    "parse_dictionary",
    "parse_signature",
    "parse_signature_input",
    "serialize_dictionary",
    "serialize_signature",
    "serialize_signature_input",
    "sign_params",
    "sign_request",
    "signature_base",
    "verify_content_digest",
    "verify_request",
]

ALGORITHM = "hmac-sha256"
DERIVED_COMPONENTS = frozenset(
    {"@method", "@target-uri", "@authority", "@scheme", "@request-target", "@path", "@query"}
)
SIGNATURE_PARAMETERS = ("created", "expires", "nonce", "keyid", "alg", "tag")
DEFAULT_COMPONENTS: tuple[str, ...] = ("@method", "@target-uri", "content-digest")
#: RFC 9530 algorithms accepted here; the insecure ones of its registry (md5, sha, unixsum,
#: unixcksum, adler, crc32c) are deliberately absent.
DIGEST_ALGORITHMS: Mapping[str, Callable[[bytes], bytes]] = {
    "sha-256": lambda b: hashlib.sha256(b).digest(),
    "sha-512": lambda b: hashlib.sha512(b).digest(),
}
MIN_SECRET_BYTES = 32  # RFC 2104 §3 / RFC 7518 §3.2: at least the hash output length

REASON_MISSING = "missing"
REASON_MALFORMED = "malformed"
REASON_UNKNOWN_KEY = "unknown_key"
REASON_ALGORITHM = "wrong_algorithm"
REASON_COVERAGE = "insufficient_coverage"
REASON_EXPIRED = "expired"
REASON_NOT_YET_VALID = "not_yet_valid"
REASON_BAD_SIGNATURE = "bad_signature"
REASON_DIGEST = "digest_mismatch"
REASON_REPLAYED = "replayed"
REASONS = frozenset(
    {
        REASON_MISSING,
        REASON_MALFORMED,
        REASON_UNKNOWN_KEY,
        REASON_ALGORITHM,
        REASON_COVERAGE,
        REASON_EXPIRED,
        REASON_NOT_YET_VALID,
        REASON_BAD_SIGNATURE,
        REASON_DIGEST,
        REASON_REPLAYED,
    }
)


class MalformedField(InvalidInput):
    """A structured field (``Signature-Input``, ``Signature``, ``Content-Digest``) or a
    component identifier does not parse, or asks for something this module refuses."""

    code = "malformed_field"

    def __init__(self, field_name: str, detail: str) -> None:
        super().__init__(f"{field_name}: {detail}")
        self.field_name = field_name


class SignatureRejected(EdgeKvError):
    """The request's signature does not establish who sent it. 401.

    ``reason`` is one of :data:`REASONS` (machine-readable, safe to show the client);
    ``detail`` says which check failed.
    """

    status = 401
    code = "signature_rejected"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


# --------------------------------------------------------------------------------------
# RFC 8941 structured fields (the subset signatures and digests need)
# --------------------------------------------------------------------------------------


class Token(str):
    """An RFC 8941 token (serialised without quotes), as opposed to a string."""

    __slots__ = ()


BareItem = Union[int, Decimal, str, bytes, bool]  # noqa: UP007  # Token is a str subclass
Params = tuple[tuple[str, BareItem], ...]


@dataclass(frozen=True)
class SfItem:
    value: BareItem
    params: Params = ()


@dataclass(frozen=True)
class SfInnerList:
    items: tuple[SfItem, ...]
    params: Params = ()


Member = SfItem | SfInnerList

_KEY_RE = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN_RE = re.compile(r"[A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]*")
_TCHAR_TAIL = frozenset("!#$%&'*+-.^_`|~:/0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
_MAX_INT = 999_999_999_999_999


class _Parser:
    """RFC 8941 §4.2 parsing algorithms over one field value."""

    def __init__(self, text: str, field_name: str) -> None:
        if not isinstance(text, str):
            raise MalformedField(field_name, f"field value must be a str, got {type(text).__name__}")
        if not text.isascii():
            raise MalformedField(field_name, "structured field values are ASCII")
        self.s = text
        self.i = 0
        self.field = field_name

    def fail(self, what: str) -> MalformedField:
        return MalformedField(self.field, f"{what} at offset {self.i}")

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def skip_sp(self) -> None:
        while self.i < len(self.s) and self.s[self.i] == " ":
            self.i += 1

    def skip_ows(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t":
            self.i += 1

    def dictionary(self) -> dict[str, Member]:
        self.skip_sp()
        members: dict[str, Member] = {}
        while self.i < len(self.s):
            key = self.key()
            member: Member
            if self.peek() == "=":
                self.i += 1
                member = self.item_or_inner_list()
            else:
                member = SfItem(True, self.params())
            if key in members:
                raise self.fail(f"dictionary key {key!r} repeated")
            members[key] = member
            self.skip_ows()
            if self.i >= len(self.s):
                break
            if self.peek() != ",":
                raise self.fail("expected ',' between dictionary members")
            self.i += 1
            self.skip_ows()
            if self.i >= len(self.s):
                raise self.fail("trailing ',' in dictionary")
        return members

    def item_or_inner_list(self) -> Member:
        return self.inner_list() if self.peek() == "(" else self.item()

    def inner_list(self) -> SfInnerList:
        self.i += 1  # "("
        items: list[SfItem] = []
        while self.i < len(self.s):
            self.skip_sp()
            if self.peek() == ")":
                self.i += 1
                return SfInnerList(tuple(items), self.params())
            items.append(self.item())
            if self.peek() not in (" ", ")"):
                raise self.fail("expected ' ' or ')' in inner list")
        raise self.fail("unterminated inner list")

    def item(self) -> SfItem:
        value = self.bare_item()
        return SfItem(value, self.params())

    def params(self) -> Params:
        out: list[tuple[str, BareItem]] = []
        seen: set[str] = set()
        while self.peek() == ";":
            self.i += 1
            self.skip_sp()
            key = self.key()
            value: BareItem = True
            if self.peek() == "=":
                self.i += 1
                value = self.bare_item()
            if key in seen:
                raise self.fail(f"parameter {key!r} repeated")
            seen.add(key)
            out.append((key, value))
        return tuple(out)

    def key(self) -> str:
        m = _KEY_RE.match(self.s, self.i)
        if not m:
            raise self.fail("expected a key (lowercase letter or '*')")
        self.i = m.end()
        return m.group()

    def bare_item(self) -> BareItem:
        c = self.peek()
        if c == "-" or c.isdigit():
            return self.number()
        if c == '"':
            return self.string()
        if c == ":":
            return self.byte_sequence()
        if c == "?":
            return self.boolean()
        if c == "*" or ("A" <= c <= "Z") or ("a" <= c <= "z"):
            return self.token()
        raise self.fail("expected a bare item")

    def number(self) -> int | Decimal:
        sign = 1
        if self.peek() == "-":
            sign = -1
            self.i += 1
        if not self.peek().isdigit():
            raise self.fail("expected a digit")
        digits_start = self.i
        is_decimal = False
        while self.i < len(self.s):
            c = self.s[self.i]
            if c.isdigit():
                self.i += 1
            elif c == "." and not is_decimal:
                if self.i - digits_start > 12:
                    raise self.fail("decimal has more than 12 integer digits")
                is_decimal = True
                self.i += 1
            else:
                break
            if not is_decimal and self.i - digits_start > 15:
                raise self.fail("integer has more than 15 digits")
            if is_decimal and self.i - digits_start > 16:
                raise self.fail("decimal is too long")
        text = self.s[digits_start : self.i]
        if not is_decimal:
            return sign * int(text)
        if text.endswith("."):
            raise self.fail("decimal ends with '.'")
        if len(text.split(".")[1]) > 3:
            raise self.fail("decimal has more than 3 fractional digits")
        return Decimal(text) * sign

    def string(self) -> str:
        self.i += 1  # opening quote
        out: list[str] = []
        while self.i < len(self.s):
            c = self.s[self.i]
            self.i += 1
            if c == "\\":
                if self.i >= len(self.s):
                    raise self.fail("string ends inside an escape")
                n = self.s[self.i]
                self.i += 1
                if n not in ('"', "\\"):
                    raise self.fail('only \\" and \\\\ escapes are allowed in a string')
                out.append(n)
            elif c == '"':
                return "".join(out)
            elif not (" " <= c <= "~"):
                raise self.fail("strings hold printable ASCII only")
            else:
                out.append(c)
        raise self.fail("unterminated string")

    def token(self) -> Token:
        start = self.i
        self.i += 1
        while self.i < len(self.s) and self.s[self.i] in _TCHAR_TAIL:
            self.i += 1
        return Token(self.s[start : self.i])

    def byte_sequence(self) -> bytes:
        self.i += 1  # ":"
        end = self.s.find(":", self.i)
        if end < 0:
            raise self.fail("unterminated byte sequence")
        text = self.s[self.i : end]
        if any(c not in _B64_CHARS for c in text):
            raise self.fail("byte sequence is not base64")
        self.i = end + 1
        padded = text + "=" * (-len(text) % 4)  # RFC 8941 §4.2.7: tolerate missing padding
        try:
            return base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError):
            raise self.fail("byte sequence is not valid base64") from None

    def boolean(self) -> bool:
        self.i += 1
        c = self.peek()
        if c not in ("0", "1"):
            raise self.fail("boolean must be ?0 or ?1")
        self.i += 1
        return c == "1"


def parse_dictionary(value: str, field_name: str = "field") -> dict[str, Member]:
    """Parse an RFC 8941 dictionary (members in field order). A repeated key is refused."""
    p = _Parser(value, field_name)
    members = p.dictionary()
    p.skip_sp()
    if p.i != len(p.s):
        raise p.fail("unexpected characters after the dictionary")
    return members


def _ser_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise InvalidInput(f"structured-field key {key!r} must match [a-z*][a-z0-9_-.*]*")
    return key


def _ser_bare(value: BareItem) -> str:
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        if abs(value) > _MAX_INT:
            raise InvalidInput(f"integer {value} is outside the structured-field range")
        return str(value)
    if isinstance(value, Decimal):
        q = value.quantize(Decimal("0.001"), rounding=ROUND_HALF_EVEN)
        if abs(q) >= Decimal(10**12):
            raise InvalidInput(f"decimal {value} is outside the structured-field range")
        text = format(q, "f")
        text = text.rstrip("0")
        return text + "0" if text.endswith(".") else text
    if isinstance(value, Token):
        if not _TOKEN_RE.fullmatch(value):
            raise InvalidInput(f"{value!r} is not a structured-field token")
        return str(value)
    if isinstance(value, str):
        if any(not (" " <= c <= "~") for c in value):
            raise InvalidInput(f"structured-field strings hold printable ASCII only: {value!r}")
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (bytes, bytearray)):
        return ":" + base64.b64encode(bytes(value)).decode("ascii") + ":"
    raise InvalidInput(f"cannot serialise {type(value).__name__} as a structured-field item")


def _ser_params(params: Params) -> str:
    out = []
    for key, value in params:
        out.append(";" + _ser_key(key) + ("" if value is True else "=" + _ser_bare(value)))
    return "".join(out)


def _ser_member(member: Member) -> str:
    if isinstance(member, SfInnerList):
        inner = " ".join(_ser_bare(i.value) + _ser_params(i.params) for i in member.items)
        return "(" + inner + ")" + _ser_params(member.params)
    return _ser_bare(member.value) + _ser_params(member.params)


def serialize_dictionary(members: Mapping[str, Member]) -> str:
    """RFC 8941 §4.1.2 serialisation of a dictionary."""
    parts = []
    for key, member in members.items():
        k = _ser_key(key)
        if isinstance(member, SfItem) and member.value is True:
            parts.append(k + _ser_params(member.params))
        else:
            parts.append(k + "=" + _ser_member(member))
    return ", ".join(parts)


# --------------------------------------------------------------------------------------
# The request and its components
# --------------------------------------------------------------------------------------

_UNRESERVED = r"A-Za-z0-9._~\-"
_SUB_DELIMS = r"!$&'()*+,;="
_PCT = r"%[0-9A-Fa-f]{2}"
_URL_RE = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://"
    rf"(?P<userinfo>(?:[{_UNRESERVED}{_SUB_DELIMS}:]|{_PCT})*@)?"
    rf"(?P<host>\[[0-9A-Fa-f:.]+\]|(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT})+)"
    r"(?::(?P<port>[0-9]*))?"
    rf"(?P<path>/(?:[{_UNRESERVED}{_SUB_DELIMS}:@/]|{_PCT})*)?"
    rf"(?P<q>\?(?P<query>(?:[{_UNRESERVED}{_SUB_DELIMS}:@/?]|{_PCT})*))?"
    rf"(?:\#(?:[{_UNRESERVED}{_SUB_DELIMS}:@/?]|{_PCT})*)?"
)
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_FIELD_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
_OBS_FOLD_RE = re.compile(r"[ \t]*\r\n[ \t]+")
_METHOD_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True)
class _Url:
    scheme: str
    host: str
    port: str | None
    path: str
    query: str | None


def _split_url(url: str) -> _Url:
    if not isinstance(url, str) or not url.isascii():
        raise MalformedField("@target-uri", "the target URI must be an ASCII (percent-encoded) string")
    m = _URL_RE.fullmatch(url)
    if not m:
        raise MalformedField("@target-uri", f"not an absolute http(s) URI: {url!r}")
    if m["userinfo"]:
        raise MalformedField("@target-uri", "a target URI with userinfo is refused (RFC 9110 §4.2.4)")
    scheme = m["scheme"].lower()
    if scheme not in _DEFAULT_PORTS:
        raise MalformedField("@target-uri", f"scheme must be http or https, got {m['scheme']!r}")
    return _Url(m["scheme"], m["host"], m["port"], m["path"] or "", m["query"] if m["q"] else None)


@dataclass(frozen=True)
class HttpRequest:
    """What a signature covers: method, absolute target URI and the header field lines
    (names as received, in order; several lines with one name stay separate)."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def build(
        cls, method: str, url: str, headers: Mapping[str, str] | Iterable[tuple[str, str]] = ()
    ) -> HttpRequest:
        items = headers.items() if isinstance(headers, Mapping) else headers
        return cls(method, url, tuple((str(k), str(v)) for k, v in items))

    def field_lines(self, name: str) -> list[str]:
        wanted = name.lower()
        return [v for k, v in self.headers if k.lower() == wanted]

    def header(self, name: str) -> str | None:
        """The field's combined value per RFC 9421 §2.1, or ``None`` when absent."""
        lines = self.field_lines(name)
        if not lines:
            return None
        return ", ".join(_normalise_field_value(v) for v in lines)

    def with_headers(self, extra: Iterable[tuple[str, str]], *, replace: bool = True) -> HttpRequest:
        """A copy with ``extra`` field lines appended; with ``replace`` the existing lines
        of those names are dropped first."""
        extra = list(extra)
        names = {k.lower() for k, _ in extra} if replace else set()
        kept = tuple((k, v) for k, v in self.headers if k.lower() not in names)
        return HttpRequest(self.method, self.url, kept + tuple(extra))


def _normalise_field_value(value: str) -> str:
    """RFC 9421 §2.1: replace obsolete line folding by one space, trim OWS."""
    return _OBS_FOLD_RE.sub(" ", value).strip(" \t")


@dataclass(frozen=True)
class Component:
    """A component identifier: a lowercased field name or a derived ``@name``."""

    name: str
    params: Params = ()

    @classmethod
    def of(cls, name: str | Component) -> Component:
        if isinstance(name, Component):
            return name
        if not isinstance(name, str) or not name:
            raise MalformedField("component", f"component name must be a non-empty str, got {name!r}")
        if name.startswith('"'):  # a serialised identifier, e.g. '"content-type"'
            member = parse_dictionary("c=" + name, "component")["c"]
            if not isinstance(member, SfItem) or not isinstance(member.value, str):
                raise MalformedField("component", f"{name!r} is not a component identifier")
            return cls(str(member.value), member.params)
        return cls(name.lower() if not name.startswith("@") else name)

    def serialize(self) -> str:
        return _ser_bare(self.name) + _ser_params(self.params)

    def __str__(self) -> str:
        return self.serialize()


def check_component(c: Component) -> None:
    """Refuse a component this module cannot sign (parameters, unknown derived names)."""
    if c.params:
        raise MalformedField(
            "Signature-Input",
            f"component parameters ({', '.join(k for k, _ in c.params)}) on {c.name!r} are not supported",
        )
    if c.name.startswith("@"):
        if c.name not in DERIVED_COMPONENTS:
            raise MalformedField("Signature-Input", f"derived component {c.name!r} is not supported")
    elif not _FIELD_NAME_RE.fullmatch(c.name):
        raise MalformedField("Signature-Input", f"{c.name!r} is not a lowercase HTTP field name")


def component_value(component: str | Component, request: HttpRequest) -> str:
    """The value of one covered component for ``request`` (RFC 9421 §2.1, §2.2).

    A covered field that is absent, or a value holding CR/LF or non-ASCII characters,
    raises :class:`MalformedField`.
    """
    c = Component.of(component)
    check_component(c)
    if c.name.startswith("@"):
        value = _derived(c.name, request)
    else:
        found = request.header(c.name)
        if found is None:
            raise MalformedField(c.name, "covered field is absent from the message")
        value = found
    if "\r" in value or "\n" in value or not value.isascii():
        raise MalformedField(c.name, "component value must be ASCII without CR/LF")
    if any((ch < " " and ch != "\t") or ch == "\x7f" for ch in value):
        raise MalformedField(c.name, "component value holds control characters")
    return value


def _derived(name: str, request: HttpRequest) -> str:
    if name == "@method":
        if not isinstance(request.method, str) or not _METHOD_RE.fullmatch(request.method):
            raise MalformedField("@method", f"{request.method!r} is not an HTTP method token")
        return request.method
    u = _split_url(request.url)
    path = u.path or ("" if request.method == "OPTIONS" else "/")
    query = "" if u.query is None else "?" + u.query
    if name == "@target-uri":
        authority = u.host if u.port is None else f"{u.host}:{u.port}"
        return f"{u.scheme}://{authority}{path}{query}"
    if name == "@authority":
        port = u.port
        if port is not None and (port == "" or port.lstrip("0") == _DEFAULT_PORTS[u.scheme.lower()]):
            port = None
        host = u.host.lower()
        return host if port is None else f"{host}:{port}"
    if name == "@scheme":
        return u.scheme.lower()
    if name == "@request-target":
        return (u.path or "/") + query
    if name == "@path":
        return u.path or "/"
    if name == "@query":
        return "?" + (u.query or "")
    raise MalformedField(
        "Signature-Input", f"derived component {name!r} is not supported"
    )  # pragma: no cover


# --------------------------------------------------------------------------------------
# Signature parameters, Signature-Input and Signature
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureParams:
    """One signature's covered components and parameters, in their serialised order."""

    components: tuple[Component, ...]
    params: tuple[tuple[str, int | str], ...] = ()

    @classmethod
    def create(
        cls,
        components: Iterable[str | Component],
        *,
        created: int | None = None,
        expires: int | None = None,
        nonce: str | None = None,
        keyid: str | None = None,
        alg: str | None = None,
        tag: str | None = None,
    ) -> SignatureParams:
        values: dict[str, int | str | None] = {
            "created": created,
            "expires": expires,
            "nonce": nonce,
            "keyid": keyid,
            "alg": alg,
            "tag": tag,
        }
        out = cls(
            tuple(Component.of(c) for c in components),
            tuple((k, v) for k, v in values.items() if v is not None),
        )
        out.check()
        return out

    def get(self, name: str) -> int | str | None:
        for k, v in self.params:
            if k == name:
                return v
        return None

    @property
    def created(self) -> int | None:
        v = self.get("created")
        return v if isinstance(v, int) else None

    @property
    def expires(self) -> int | None:
        v = self.get("expires")
        return v if isinstance(v, int) else None

    @property
    def nonce(self) -> str | None:
        v = self.get("nonce")
        return v if isinstance(v, str) else None

    @property
    def keyid(self) -> str | None:
        v = self.get("keyid")
        return v if isinstance(v, str) else None

    @property
    def alg(self) -> str | None:
        v = self.get("alg")
        return v if isinstance(v, str) else None

    @property
    def tag(self) -> str | None:
        v = self.get("tag")
        return v if isinstance(v, str) else None

    def check(self) -> None:
        """Refuse unknown or mistyped parameters, repeated or unsupported components."""
        seen: set[Component] = set()
        for c in self.components:
            check_component(c)
            if c in seen:
                raise MalformedField("Signature-Input", f"component {c.serialize()} is covered twice")
            seen.add(c)
        names: set[str] = set()
        for k, v in self.params:
            if k not in SIGNATURE_PARAMETERS:
                raise MalformedField("Signature-Input", f"unknown signature parameter {k!r}")
            if k in names:
                raise MalformedField("Signature-Input", f"signature parameter {k!r} repeated")
            names.add(k)
            if k in ("created", "expires"):
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise MalformedField("Signature-Input", f"{k} must be a non-negative integer, got {v!r}")
            elif not isinstance(v, str) or isinstance(v, Token):
                raise MalformedField("Signature-Input", f"{k} must be a string, got {v!r}")
            elif k != "tag" and not v:
                raise MalformedField("Signature-Input", f"{k} must not be empty")

    def to_inner_list(self) -> SfInnerList:
        return SfInnerList(tuple(SfItem(c.name, c.params) for c in self.components), tuple(self.params))

    def serialize(self) -> str:
        """The ``@signature-params`` value (also the ``Signature-Input`` member)."""
        return _ser_member(self.to_inner_list())


def _base_and_values(request: HttpRequest, params: SignatureParams) -> tuple[bytes, dict[str, str]]:
    params.check()
    values = {c.serialize(): component_value(c, request) for c in params.components}
    lines = [f"{ident}: {value}" for ident, value in values.items()]
    lines.append(f'"@signature-params": {params.serialize()}')
    return "\n".join(lines).encode("ascii"), {Component.of(k).name: v for k, v in values.items()}


def signature_base(request: HttpRequest, params: SignatureParams) -> bytes:
    """The RFC 9421 §2.5 signature base: one line per covered component, then
    ``"@signature-params"``, joined by LF without a trailing newline; ASCII bytes."""
    return _base_and_values(request, params)[0]


def serialize_signature_input(signatures: Mapping[str, SignatureParams]) -> str:
    return serialize_dictionary({label: p.to_inner_list() for label, p in signatures.items()})


def serialize_signature(signatures: Mapping[str, bytes]) -> str:
    return serialize_dictionary({label: SfItem(bytes(sig)) for label, sig in signatures.items()})


def parse_signature_input(value: str) -> dict[str, SignatureParams]:
    """Parse ``Signature-Input``: each member an inner list of component strings with
    the signature parameters. Anything else raises :class:`MalformedField`."""
    out: dict[str, SignatureParams] = {}
    for label, member in parse_dictionary(value, "Signature-Input").items():
        if not isinstance(member, SfInnerList):
            raise MalformedField("Signature-Input", f"member {label!r} must be an inner list")
        comps = []
        for item in member.items:
            if not isinstance(item.value, str) or isinstance(item.value, Token):
                raise MalformedField("Signature-Input", f"component identifiers must be strings ({label!r})")
            if item.value != item.value.lower():
                raise MalformedField("Signature-Input", f"component {item.value!r} must be lowercase")
            comps.append(Component(item.value, item.params))
        params: list[tuple[str, int | str]] = []
        for k, v in member.params:
            if isinstance(v, (bytes, Decimal, bool)):
                raise MalformedField("Signature-Input", f"parameter {k!r} has the wrong type")
            params.append((k, v))
        sp = SignatureParams(tuple(comps), tuple(params))
        sp.check()
        out[label] = sp
    return out


def parse_signature(value: str) -> dict[str, bytes]:
    """Parse ``Signature``: each member a byte sequence."""
    out: dict[str, bytes] = {}
    for label, member in parse_dictionary(value, "Signature").items():
        if not isinstance(member, SfItem) or not isinstance(member.value, bytes):
            raise MalformedField("Signature", f"member {label!r} must be a byte sequence")
        if member.params:
            raise MalformedField("Signature", f"member {label!r} must not carry parameters")
        out[label] = member.value
    return out


# --------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HmacKey:
    """A shared ``hmac-sha256`` secret.

    ``activated_at``: from when signers may use it (verifiers accept it at once, so a
    new key can be distributed to every origin before the edge starts using it).
    ``retired_at``: from when it is refused by everyone (``None``: never).
    """

    keyid: str
    secret: bytes = field(repr=False)
    activated_at: int = 0
    retired_at: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.keyid, str) or not self.keyid or not self.keyid.isprintable():
            raise InvalidInput(f"keyid must be a non-empty printable str, got {self.keyid!r}")
        if not self.keyid.isascii():
            raise InvalidInput(f"keyid must be ASCII, got {self.keyid!r}")
        if not isinstance(self.secret, (bytes, bytearray)) or len(self.secret) < MIN_SECRET_BYTES:
            raise InvalidInput(f"secret for {self.keyid!r} must be at least {MIN_SECRET_BYTES} bytes")
        for name in ("activated_at", "retired_at"):
            v = getattr(self, name)
            if v is None and name == "retired_at":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InvalidInput(f"{name} for {self.keyid!r} must be a non-negative integer")
        if self.retired_at is not None and self.retired_at <= self.activated_at:
            raise InvalidInput(f"key {self.keyid!r} retires before it activates")

    def usable_for_verify(self, now: int) -> bool:
        return self.retired_at is None or now < self.retired_at

    def usable_for_sign(self, now: int) -> bool:
        return self.activated_at <= now and self.usable_for_verify(now)


class Keyring:
    """Several active keys (``keyid`` → secret). Verifiers accept any unretired key;
    the signer uses the newest activated one, so rotation is: add the new key
    everywhere with a future ``activated_at``, wait, then retire the old one."""

    def __init__(self, keys: Iterable[HmacKey]) -> None:
        self._keys: dict[str, HmacKey] = {}
        for key in keys:
            if not isinstance(key, HmacKey):
                raise InvalidInput(f"keyring entries must be HmacKey, got {type(key).__name__}")
            if key.keyid in self._keys:
                raise InvalidInput(f"keyid {key.keyid!r} appears twice in the keyring")
            self._keys[key.keyid] = key
        if not self._keys:
            raise InvalidInput("a keyring needs at least one key")

    @classmethod
    def from_secrets(cls, secrets_by_keyid: Mapping[str, bytes]) -> Keyring:
        """Keys all active since 0, newest = last in mapping order."""
        return cls(HmacKey(k, s, activated_at=i) for i, (k, s) in enumerate(secrets_by_keyid.items()))

    @classmethod
    def from_json(cls, raw: str) -> Keyring:
        """The signing-keys secret format: a JSON object of keyid to hex secret, newest last
        (what the gateway, the edge outbox and the origin verifier share). ValueError
        (``InvalidInput`` among them) says what is wrong with it."""
        data = json.loads(raw)
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ValueError("expected an object of keyid to secret strings")
        return cls.from_secrets({k: bytes.fromhex(v) for k, v in data.items()})

    def __contains__(self, keyid: object) -> bool:
        return keyid in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def keyids(self) -> list[str]:
        return list(self._keys)

    def for_verify(self, keyid: str, now: int) -> HmacKey | None:
        key = self._keys.get(keyid)
        return key if key is not None and key.usable_for_verify(now) else None

    def signing_key(self, now: int) -> HmacKey:
        usable = [k for k in self._keys.values() if k.usable_for_sign(now)]
        if not usable:
            raise InvalidInput("no key in the keyring is active for signing now")
        return max(usable, key=lambda k: k.activated_at)


def _hmac(secret: bytes, data: bytes) -> bytes:
    return hmac.new(bytes(secret), data, hashlib.sha256).digest()


# --------------------------------------------------------------------------------------
# Content-Digest (RFC 9530)
# --------------------------------------------------------------------------------------


def content_digest(body: bytes, algorithms: Sequence[str] = ("sha-256",)) -> str:
    """The ``Content-Digest`` field value for ``body`` (an empty body has a digest too)."""
    if not isinstance(body, (bytes, bytearray)):
        raise InvalidInput("body must be bytes")
    members: dict[str, Member] = {}
    for alg in algorithms:
        if alg not in DIGEST_ALGORITHMS:
            raise InvalidInput(f"digest algorithm {alg!r} is not supported (use sha-256 or sha-512)")
        members[alg] = SfItem(DIGEST_ALGORITHMS[alg](bytes(body)))
    if not members:
        raise InvalidInput("at least one digest algorithm is needed")
    return serialize_dictionary(members)


def parse_content_digest(value: str) -> dict[str, bytes]:
    """Parse ``Content-Digest``: algorithm → digest bytes (unknown algorithms included)."""
    out: dict[str, bytes] = {}
    for alg, member in parse_dictionary(value, "Content-Digest").items():
        if not isinstance(member, SfItem) or not isinstance(member.value, bytes):
            raise MalformedField("Content-Digest", f"member {alg!r} must be a byte sequence")
        out[alg] = member.value
    return out


def verify_content_digest(value: str, body: bytes) -> list[str]:
    """Check ``Content-Digest`` against ``body``: every supported algorithm present must
    match and at least one must be present (unknown ones are ignored, RFC 9530 §2).
    Returns the algorithms checked; raises :class:`SignatureRejected` (``digest_mismatch``)
    or :class:`MalformedField`."""
    digests = parse_content_digest(value)
    checked = []
    for alg, expected in digests.items():
        fn = DIGEST_ALGORITHMS.get(alg)
        if fn is None:
            continue
        if not hmac.compare_digest(fn(bytes(body)), expected):
            raise SignatureRejected(REASON_DIGEST, f"Content-Digest {alg} does not match the body")
        checked.append(alg)
    if not checked:
        raise SignatureRejected(
            REASON_DIGEST, "Content-Digest names no supported algorithm (sha-256, sha-512)"
        )
    return checked


# --------------------------------------------------------------------------------------
# Sign and verify
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedHeaders:
    signature_input: str
    signature: str
    params: SignatureParams
    label: str

    def items(self) -> list[tuple[str, str]]:
        return [("Signature-Input", self.signature_input), ("Signature", self.signature)]


def sign_params(
    request: HttpRequest, params: SignatureParams, key: HmacKey, label: str = "sig1"
) -> SignedHeaders:
    """Sign with exactly these parameters (no defaults added): what :func:`sign_request`
    uses, and how the RFC 9421 examples are reproduced byte for byte."""
    if params.keyid is not None and params.keyid != key.keyid:
        raise InvalidInput(f"params name keyid {params.keyid!r} but the key is {key.keyid!r}")
    if params.alg is not None and params.alg != ALGORITHM:
        raise InvalidInput(f"alg must be {ALGORITHM!r}, got {params.alg!r}")
    _ser_key(label)
    signature = _hmac(key.secret, signature_base(request, params))
    return SignedHeaders(
        serialize_signature_input({label: params}), serialize_signature({label: signature}), params, label
    )


def new_nonce() -> str:
    """A fresh 128-bit nonce (base64url, 22 characters)."""
    return secrets.token_urlsafe(16)


def sign_request(
    request: HttpRequest,
    keyring: Keyring,
    *,
    now: int,
    components: Iterable[str | Component] = DEFAULT_COMPONENTS,
    label: str = "sig1",
    nonce: str | None = None,
    expires_in: int | None = None,
    tag: str | None = None,
    include_alg: bool = True,
    key: HmacKey | None = None,
) -> SignedHeaders:
    """Sign ``request`` with the keyring's newest key (or ``key``).

    ``created`` is ``now``; ``nonce`` defaults to :func:`new_nonce`; ``expires`` is set
    when ``expires_in`` is given. Covered fields must be present in ``request`` (add
    ``Content-Digest`` first, see :func:`content_digest`).
    """
    if isinstance(now, bool) or not isinstance(now, int) or now < 0:
        raise InvalidInput("now must be a non-negative integer (seconds since the epoch)")
    use = key or keyring.signing_key(now)
    if expires_in is not None and (
        isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0
    ):
        raise InvalidInput("expires_in must be a positive integer number of seconds")
    params = SignatureParams.create(
        components,
        created=now,
        expires=None if expires_in is None else now + expires_in,
        nonce=new_nonce() if nonce is None else nonce,
        keyid=use.keyid,
        alg=ALGORITHM if include_alg else None,
        tag=tag,
    )
    return sign_params(request, params, use, label)


@dataclass(frozen=True)
class VerifiedSignature:
    label: str
    keyid: str
    params: SignatureParams
    #: covered component identifier (``"x-edge-subject"``, ``"@method"``) → signed value
    covered: Mapping[str, str]
    digest_checked: tuple[str, ...] = ()

    @property
    def created(self) -> int | None:
        return self.params.created

    @property
    def nonce(self) -> str | None:
        return self.params.nonce


def verify_request(
    request: HttpRequest,
    keyring: Keyring,
    *,
    now: int,
    max_age: int = 300,
    clock_skew: int = 30,
    required_components: Iterable[str | Component] = DEFAULT_COMPONENTS,
    required_params: Iterable[str] = ("created", "keyid"),
    body: bytes | None = None,
    label: str | None = None,
    tag: str | None = None,
) -> VerifiedSignature:
    """Verify the ``hmac-sha256`` signature on ``request``.

    Selection: the member named ``label``, else the one whose ``tag`` is ``tag``, else
    the only one. Checks, in order: syntax; required parameters and components covered;
    ``alg``; ``created`` not more than ``clock_skew`` seconds ahead of ``now`` and not
    older than ``max_age``; ``expires`` not passed; ``keyid`` known and unretired; the
    MAC (constant time); then, when ``body`` is given, the body against the signed
    ``Content-Digest`` (a non-empty body without a covered digest is refused).
    Replay (the nonce) is the caller's business: see ``edge_kv.origin.httpsig``.

    Raises :class:`SignatureRejected` with its ``reason``.
    """
    inputs_raw = request.header("signature-input")
    sigs_raw = request.header("signature")
    if not inputs_raw or not sigs_raw:
        raise SignatureRejected(REASON_MISSING, "the request carries no Signature-Input/Signature")
    try:
        inputs = parse_signature_input(inputs_raw)
        sigs = parse_signature(sigs_raw)
    except MalformedField as exc:
        raise SignatureRejected(REASON_MALFORMED, str(exc)) from exc
    if not inputs:
        raise SignatureRejected(REASON_MISSING, "Signature-Input holds no signature")
    if set(inputs) != set(sigs):
        raise SignatureRejected(REASON_MALFORMED, "Signature-Input and Signature name different labels")
    if label is not None:
        if label not in inputs:
            raise SignatureRejected(REASON_MISSING, f"no signature labelled {label!r}")
        chosen = label
    elif tag is not None:
        tagged = [lb for lb, p in inputs.items() if p.tag == tag]
        if len(tagged) != 1:
            raise SignatureRejected(REASON_MISSING, f"expected exactly one signature tagged {tag!r}")
        chosen = tagged[0]
    elif len(inputs) == 1:
        chosen = next(iter(inputs))
    else:
        raise SignatureRejected(REASON_MALFORMED, "several signatures and no label or tag to choose one")
    params = inputs[chosen]
    signature = sigs[chosen]

    for name in required_params:
        if params.get(name) is None:
            raise SignatureRejected(REASON_COVERAGE, f"signature parameter {name!r} is required")
    if tag is not None and params.tag != tag:
        raise SignatureRejected(REASON_COVERAGE, f"signature tag must be {tag!r}")
    covered = set(params.components)
    for comp in required_components:
        c = Component.of(comp)
        if c not in covered:
            raise SignatureRejected(REASON_COVERAGE, f"component {c.serialize()} must be covered")
    if params.alg is not None and params.alg != ALGORITHM:
        raise SignatureRejected(REASON_ALGORITHM, f"alg {params.alg!r} is not accepted (only {ALGORITHM})")

    created = params.created
    if created is not None:
        if created > now + clock_skew:
            raise SignatureRejected(
                REASON_NOT_YET_VALID,
                f"created is {created - now} s in the future (skew allowed {clock_skew} s)",
            )
        if now - created > max_age:
            raise SignatureRejected(REASON_EXPIRED, f"signature is {now - created} s old (max {max_age} s)")
    expires = params.expires
    if expires is not None and now >= expires + clock_skew:
        raise SignatureRejected(REASON_EXPIRED, "the signature's expires time has passed")

    keyid = params.keyid
    if keyid is None:
        raise SignatureRejected(REASON_UNKNOWN_KEY, "the signature names no keyid")
    key = keyring.for_verify(keyid, now)
    if key is None:
        raise SignatureRejected(REASON_UNKNOWN_KEY, f"keyid {keyid!r} is not accepted")

    try:
        base, values = _base_and_values(request, params)
    except MalformedField as exc:
        raise SignatureRejected(REASON_MALFORMED, str(exc)) from exc
    if not hmac.compare_digest(_hmac(key.secret, base), signature):
        raise SignatureRejected(REASON_BAD_SIGNATURE, "the signature does not match the request")

    checked: tuple[str, ...] = ()
    if body is not None:
        digest_component = Component("content-digest")
        if digest_component in covered:
            try:
                checked = tuple(verify_content_digest(values["content-digest"], body))
            except MalformedField as exc:
                raise SignatureRejected(REASON_MALFORMED, str(exc)) from exc
        elif body:
            raise SignatureRejected(REASON_COVERAGE, "the body is not covered by a signed Content-Digest")
    return VerifiedSignature(chosen, keyid, params, values, checked)
