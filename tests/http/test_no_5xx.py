"""Property: no input makes the reference Worker answer 5xx, except where a route says so.

Every route the Worker registers (collected from the ``.route("METHOD", "/path")`` calls in
``src/`` and ``edge_kv/edge/``, so a new route is covered the day it is added) is driven
through the offline host with generated requests: methods, paths (very long and
percent-encoded parameters, KV keys past 512 bytes), query strings, headers (right and wrong
service tokens, API keys, the host's cf test hook), and bodies (JSON with >4300-digit
integers, deep nesting, NaN/Infinity, lone surrogates, wrong types; non-UTF-8 bytes; other
content types). Two hosts: one without the service token, one with it and the test clock
(which also registers the test-only routes).

The only 5xx answers allowed are the ones a route documents, listed in ``ALLOWED_5XX``:
``GET /__error`` (500 on purpose), the service API refusing while ``EDGE_KV_SERVICE_TOKEN``
is unset (503), a fail-closed rate limit whose backend failed (503 with ``failures``), a JWKS
URI that cannot be fetched (503), and the pass-through bench route without its origin (503).
Afterwards both hosts must still answer ``GET /__health``.

``EDGE_KV_PROPERTY_EXAMPLES`` sets the number of generated requests (default 800, under a
minute). A failure shows the request, the answer and what the host logged meanwhile (the
traceback).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hostproc import ROOT, HostProcess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.host_only

EXAMPLES = int(os.environ.get("EDGE_KV_PROPERTY_EXAMPLES", "800"))
TIMEOUT_S = 30.0

# ---- the routes ----

_ROUTE_CALL = re.compile(r"""\.route\(\s*(?:"([A-Z]+)"|\[([^\]]*)\])\s*,\s*"(/[^"]*)"(.*)""")


def collect_routes() -> list[tuple[frozenset[str], str]]:
    """``(methods, path template)`` of every ``.route(...)`` registration in the Worker's code."""
    routes: list[tuple[frozenset[str], str]] = []
    files = sorted((ROOT / "src").glob("*.py")) + sorted((ROOT / "edge_kv" / "edge").rglob("*.py"))
    for path in files:
        for match in _ROUTE_CALL.finditer(path.read_text(encoding="utf-8")):
            one, many, template, _ = match.groups()
            methods = frozenset([one] if one else re.findall(r'"([A-Z]+)"', many))
            routes.append((methods, template))
    return sorted(set(routes), key=lambda r: (r[1], sorted(r[0])))


ROUTES = collect_routes()
SERVICE_PREFIXES = ("/admin/kv/", "/ratelimit/", "/locks/")


@dataclass(frozen=True)
class Sent:
    """One generated request and which host it went to."""

    host: str  # "plain" (no service token) or "service" (token + test clock)
    method: str
    template: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None

    def describe(self) -> str:
        body = (
            "" if self.body is None else f" body={self.body[:600]!r}{'...' if len(self.body) > 600 else ''}"
        )
        return f"[{self.host} host] {self.method} {self.target[:600]} headers={list(self.headers)}{body}"


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _no_token(sent: Sent, response: httpx.Response) -> bool:
    """The service API refuses with 503 while EDGE_KV_SERVICE_TOKEN is unset (documented)."""
    if sent.host != "plain" or not sent.template.startswith(SERVICE_PREFIXES):
        return False
    return sent.method == "HEAD" or "EDGE_KV_SERVICE_TOKEN" in str(_problem(response).get("detail", ""))


def _fail_closed(sent: Sent, response: httpx.Response) -> bool:
    """A fail-closed limit whose backend failed: 503, ``X-RateLimit-Source: fail-closed``, the
    failures in the body (a HEAD answer has no body)."""
    if response.headers.get("x-ratelimit-source") != "fail-closed":
        return False
    return sent.method == "HEAD" or "failures" in _problem(response)


def _jwks_unreachable(sent: Sent, response: httpx.Response) -> bool:
    """POST /__jwt/verify with a jwks_uri that cannot be fetched and nothing cached (documented)."""
    return sent.body is not None and b"jwks_uri" in sent.body


def _passthrough_unset(sent: Sent, response: httpx.Response) -> bool:
    """GET /__passthrough/... without EDGE_KV_PASSTHROUGH_ORIGIN (neither test host sets it)."""
    return sent.method == "HEAD" or "EDGE_KV_PASSTHROUGH_ORIGIN" in str(_problem(response).get("detail", ""))


# (template, status, the documented condition under which that 5xx is right). A request only
# reaches a route's handler with one of its methods: any other method is a 405 there.
ALLOWED_5XX: list[tuple[str, int, Callable[[Sent, httpx.Response], bool]]] = [
    ("/__error", 500, lambda sent, response: True),
    *[
        (template, 503, _no_token)
        for template in (
            "/admin/kv/{key}",
            "/ratelimit/{limit}",
            "/ratelimit/{limit}/state",
            "/ratelimit/{limit}/replay",
            "/locks/{resource}",
            "/locks/{resource}/acquire",
            "/locks/{resource}/extend",
            "/locks/{resource}/release",
        )
    ],
    ("/ratelimit/{limit}", 503, _fail_closed),
    ("/ratelimit/{limit}/replay", 503, _fail_closed),
    ("/limited/{name}", 503, _fail_closed),
    ("/limited-kv/{name}", 503, _fail_closed),
    ("/__jwt/verify", 503, _jwks_unreachable),
    ("/__passthrough/{path}", 503, _passthrough_unset),
]


def allowed(sent: Sent, response: httpx.Response) -> bool:
    if response.status_code < 500:
        return True
    return any(
        template == sent.template and status == response.status_code and condition(sent, response)
        for template, status, condition in ALLOWED_5XX
    )


# ---- generated values ----


@dataclass(frozen=True)
class HugeInt:
    """An integer literal too long for Python's int() (> 4300 digits) without a limit change."""

    digits: str


@dataclass(frozen=True)
class Deep:
    """``depth`` nested arrays or objects around a value."""

    depth: int
    kind: str  # "[" or "{"


def dump(value: Any, *, raw_unicode: bool = False) -> str:
    """JSON text of ``value``, HugeInt/Deep/NaN/Infinity included (Python's json accepts those)."""
    if isinstance(value, HugeInt):
        return value.digits
    if isinstance(value, Deep):
        if value.kind == "[":
            return "[" * value.depth + "]" * value.depth
        return '{"a":' * value.depth + "1" + "}" * value.depth
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=not raw_unicode)
    if isinstance(value, list):
        return "[" + ",".join(dump(v, raw_unicode=raw_unicode) for v in value) + "]"
    if isinstance(value, dict):
        items = (
            f"{dump(k, raw_unicode=raw_unicode)}:{dump(v, raw_unicode=raw_unicode)}" for k, v in value.items()
        )
        return "{" + ",".join(items) + "}"
    return json.dumps(value)


surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
texts = st.one_of(
    st.text(max_size=30),
    st.text(st.one_of(st.characters(), surrogates), max_size=12),
    st.integers(0, 3).map(lambda n: ["", " ", "demo", "config:limits"][n]),
    st.integers(200, 3000).map(lambda n: "v" * n),
)
ints = st.one_of(
    st.integers(-5, 70),
    st.sampled_from([0, -1, 59, 60, 61, 1000, 86_400, 2**31 - 1, 2**31, 2**52, 2**53 + 1, 2**63, 10**20]),
    st.just(99999999999999999999),
    st.integers(-(10**30), 10**30),
)
huge_ints = st.integers(4301, 6000).map(lambda n: HugeInt("9" * n))
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.5, 1.0, 60.0, -0.0, 1e308, 1e-320])
)
deep = st.builds(Deep, st.sampled_from([64, 500, 1000, 3000, 10_000, 100_000]), st.sampled_from(["[", "{"]))
scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts, huge_ints)
values = st.recursive(
    st.one_of(scalars, deep),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)

# Fields each route reads (their docstrings); other routes get random field names.
FIELDS: dict[str, list[str]] = {
    "/echo": ["a", "value"],
    "/kv/{key}": ["value", "ttl"],
    "/admin/kv/{key}": ["value", "ttl"],
    "/cache/{key}": ["value", "max_age"],
    "/do/counter/{name}/increment": ["by"],
    "/do/counter/{name}/alarm": ["delay_ms"],
    "/do/counter/{name}/sql": ["text"],
    "/ratelimit/{limit}": ["key", "cost", "now_us"],
    "/ratelimit/{limit}/replay": ["key", "steps"],
    "/locks/{resource}/acquire": ["ttl_ms", "wait_ms", "owner", "poll_ms"],
    "/locks/{resource}/extend": ["owner", "ttl_ms"],
    "/locks/{resource}/release": ["owner"],
    "/__jwt/verify": [
        "token",
        "jwks",
        "jwks_uri",
        "issuer",
        "audience",
        "algorithms",
        "leeway_s",
        "now",
        "required_claims",
        "default_alg",
        "payload_only",
    ],
    "/__bench/jwt": ["token", "jwks", "issuer", "audience", "algorithms", "n"],
}


# Plausible values per field, so requests also get past validation into the real work.
# Waits are kept short (wait_ms, n, steps) so one example cannot take seconds.
def mostly(valid: st.SearchStrategy[Any], edges: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid values three times as often as boundary ones."""
    return st.one_of(valid, valid, valid, edges)


def half(valid: st.SearchStrategy[Any], edges: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Boundary values as often as valid ones (plain numbers whose limits matter most)."""
    return st.one_of(valid, edges)


PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "value": st.text(max_size=50),
    "ttl": half(
        st.sampled_from([60, 120, 3600]), st.sampled_from([59, 2**31 - 1, 2**31, 2**32, 99999999999999999999])
    ),
    "max_age": half(st.sampled_from([1, 60]), st.sampled_from([0, 10**9, 10**9 + 1, 2**31, 2**63])),
    "by": mostly(st.integers(1, 5), st.integers(-3, 10**20)),
    "delay_ms": half(st.sampled_from([50, 1000, 60_000]), st.sampled_from([0, 10**6, 10**13, 10**15, 2**63])),
    "text": st.text(max_size=50),
    "key": mostly(st.text(min_size=1, max_size=20), st.integers(200, 700).map(lambda n: "k" * n)),
    "cost": mostly(st.integers(0, 3), st.integers(-2, 10**6)),
    "now_us": mostly(st.integers(0, 2**40), st.sampled_from([2**52 - 1, 2**52, 2**63, -1])),
    "steps": st.lists(
        st.fixed_dictionaries({"cost": st.integers(-1, 5), "now_us": st.integers(-1, 2**53)}), max_size=20
    ),
    "ttl_ms": mostly(st.sampled_from([100, 1000, 5000]), st.sampled_from([0, 1, 10_000, 10_001, 2**53])),
    "wait_ms": st.integers(0, 200),
    "owner": mostly(st.text(min_size=1, max_size=20), st.integers(100, 400).map(lambda n: "o" * n)),
    "poll_ms": mostly(st.sampled_from([5, 25, 100]), st.sampled_from([1, 1000, 1001])),
    "token": st.sampled_from(["", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "x" * 5000]),
    "jwks": st.one_of(
        st.just({"keys": []}),
        st.just({"keys": [{"kty": "oct", "k": "AAAA", "alg": "HS256"}]}),
        st.just({"keys": [{"kty": "RSA", "n": "xx", "e": "AQAB", "alg": "RS256"}]}),
    ),
    "jwks_uri": st.sampled_from(["http://127.0.0.1:1/jwks.json", "not a url", ""]),
    "algorithms": st.lists(st.sampled_from(["HS256", "RS256", "none", "ES256", ""]), max_size=3),
    "n": st.integers(-1, 20),
}
# Fields whose large values would make one example take seconds: no junk for them.
BOUNDED = {"wait_ms", "n", "steps"}


@st.composite
def json_bodies(draw: st.DrawFn, template: str) -> str:
    fields = FIELDS.get(template) or ["a", "b"]
    chosen = [name for name in fields if draw(st.integers(0, 3))]  # each field 3 times in 4
    body: dict[str, Any] = {}
    for name in chosen:
        plausible = PLAUSIBLE.get(name, values)
        junk = name not in BOUNDED and draw(st.integers(0, 3)) == 0
        body[name] = draw(values if junk else plausible)
    if draw(st.booleans()):
        body[draw(st.text(max_size=6))] = draw(values)
    document: Any = body if draw(st.integers(0, 5)) else draw(values)
    return dump(document, raw_unicode=draw(st.booleans()))


@st.composite
def bodies(draw: st.DrawFn, template: str) -> tuple[bytes | None, str | None]:
    """(body, content-type)."""
    kind = draw(st.sampled_from(["none", "bytes", "text", *["json"] * 6]))
    content_type = draw(
        st.sampled_from(
            [
                None,
                *["application/json"] * 12,
                "application/json; charset=utf-8",
                "application/merge-patch+json",
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "a/b",
            ]
        )
    )
    if kind == "none":
        return None, content_type
    if kind == "bytes":
        return draw(
            st.binary(max_size=300) | st.just(b"\xff\xfe\xfd{") | st.just(b'{"value": "\xc3"}')
        ), content_type
    text = draw(json_bodies(template)) if kind == "json" else draw(st.text(max_size=200))
    return text.encode("utf-8", "surrogatepass"), content_type


def path_params(name: str) -> st.SearchStrategy[str]:
    long_values = st.one_of(
        st.integers(400, 1500).map(lambda n: "k" * n),
        st.integers(100, 400).map(lambda n: "é" * n),
        st.text(min_size=100, max_size=400),
    )
    if name == "limit":
        from test_edge_limits import LIMITS

        names = st.sampled_from([*sorted(LIMITS["limits"]), "per-ip", "nope"])
        return st.one_of(names, names, names, st.text(max_size=20), long_values)
    if name == "name":  # Durable Object names: a small pool, so few objects are created
        pool = st.sampled_from(["a", "b", "prop"])
        return st.one_of(pool, pool, pool, st.text(max_size=20), long_values)
    short = st.text(max_size=40)
    special = st.sampled_from(["", ".", "..", "%", "%zz", "a/b", "config:limits", "apikey:x"])
    return st.one_of(short, short, short, short, long_values, special)


_PARAM = re.compile(r"\{([a-zA-Z_]+)\}")


@st.composite
def targets(draw: st.DrawFn, template: str) -> str:
    path = ""
    pos = 0
    for match in _PARAM.finditer(template):
        path += template[pos : match.start()]
        value = draw(path_params(match.group(1)))
        encoded = quote(
            value.encode("utf-8", "surrogatepass"), safe=draw(st.sampled_from(["", ":@!$'()*+,;="]))
        )
        path += encoded or "x"  # an empty segment would not match the route at all
        pos = match.end()
    path += template[pos:]
    if draw(st.integers(0, 19)) == 0:
        path += draw(st.sampled_from(["/", "/extra", "%2F", "//"]))
    query_names = ["chunks", "interval_ms", "size", "key", "cache", "x"]
    query = draw(
        st.lists(
            st.tuples(
                st.sampled_from(query_names),
                st.one_of(st.sampled_from(["0", "1", "2", "-1", "1001", "x", ""]), st.text(max_size=20)),
            ),
            max_size=3,
        )
    )
    if template == "/__stream":  # keep the stream short: at most a few chunks, no long waits
        query = [(k, v) for k, v in query if k not in ("chunks", "interval_ms", "size")]
        query += [("chunks", draw(st.sampled_from(["1", "3", "0", "x"]))), ("interval_ms", "0")]
    if query:
        path += "?" + "&".join(f"{quote(k)}={quote(v.encode('utf-8', 'surrogatepass'))}" for k, v in query)
    return path


def token_for(host: str) -> str:
    from test_edge_limits import TOKEN

    return TOKEN if host == "service" else "dev-token"


@st.composite
def header_sets(draw: st.DrawFn, host: str) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    auth = draw(st.sampled_from(["none", "wrong", "basic", "junk", *["right"] * 5]))
    if auth == "right":
        headers.append(("authorization", f"Bearer {token_for(host)}"))
    elif auth == "wrong":
        headers.append(("authorization", "Bearer wrong-token"))
    elif auth == "basic":
        headers.append(("authorization", "Basic dXNlcjpwYXNz"))
    elif auth == "junk":
        headers.append(("authorization", "Bearer " + "x" * draw(st.integers(0, 3000))))
    if draw(st.integers(0, 3)) == 0:
        headers.append(
            ("x-api-key", draw(st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=80)))
        )
    if draw(st.integers(0, 4)) == 0:
        valid_cf = st.fixed_dictionaries(
            {},
            optional={
                "connectingIp": st.sampled_from(["203.0.113.7", "2001:db8::1", "10.0.0.1"]),
                "country": st.sampled_from(["DE", "US", "JP", "T1", "XX"]),
                "colo": st.sampled_from(["FRA", "SJC", "NRT"]),
                "continent": st.sampled_from(["EU", "NA", "AS"]),
            },
        ).map(json.dumps)
        cf = draw(
            st.one_of(
                valid_cf, valid_cf, valid_cf, st.sampled_from(["not json", "[]", '{"connectingIp": 5}'])
            )
        )
        headers.append(("x-edge-kv-test-cf", cf))
    printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=100)
    extra = draw(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        "accept",
                        "accept-encoding",
                        "content-encoding",
                        "cookie",
                        "if-none-match",
                        "range",
                        "origin",
                        "cf-connecting-ip",
                        "x-forwarded-for",
                        "x-edge-user",
                        "x-anything",
                    ]
                ),
                printable.map(str.strip),
            ),
            max_size=3,
        )
    )
    return headers + extra


METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"]


@st.composite
def requests(draw: st.DrawFn) -> Sent:
    methods, template = draw(st.sampled_from(ROUTES))
    host = draw(st.sampled_from(["plain", "service", "service"]))
    method = (
        draw(st.sampled_from(sorted(methods))) if draw(st.integers(0, 4)) else draw(st.sampled_from(METHODS))
    )
    body, content_type = draw(bodies(template))
    headers = draw(header_sets(host))
    if content_type is not None:
        headers.append(("content-type", content_type))
    clean = tuple((k, v.strip()) for k, v in headers)  # h11 refuses surrounding whitespace
    return Sent(host, method, template, draw(targets(template)), clean, body)


# ---- the hosts and the property ----


@pytest.fixture(scope="module")
def hosts(
    worker_config: Path, service_config: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, HostProcess]]:
    started = {
        "plain": HostProcess(worker_config, tmp_path_factory.mktemp("no5xx-plain")),
        "service": HostProcess(service_config, tmp_path_factory.mktemp("no5xx-service")),
    }
    try:
        for host in started.values():
            host.start()
        yield started
    finally:
        for host in started.values():
            host.close()


def test_routes_are_collected() -> None:
    templates = {template for _, template in ROUTES}
    for expected in ("/__health", "/__error", "/kv/{key}", "/ratelimit/{limit}", "/locks/{resource}/acquire"):
        assert expected in templates, sorted(templates)


def test_no_route_answers_5xx_unless_documented(hosts: dict[str, HostProcess]) -> None:
    clients = {name: httpx.Client(base_url=host.url, timeout=TIMEOUT_S) for name, host in hosts.items()}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(sent=requests())
    def check(sent: Sent) -> None:
        host = hosts[sent.host]
        log_before = len(host.output())
        try:
            response = clients[sent.host].request(
                sent.method, sent.target, headers=list(sent.headers), content=sent.body
            )
        except httpx.HTTPError as exc:
            logged = host.output()[log_before:][-4000:]
            raise AssertionError(f"{sent.describe()}\n-> {exc!r}\nhost log:\n{logged}") from None
        if not allowed(sent, response):
            logged = host.output()[log_before:][-4000:]
            raise AssertionError(
                f"{sent.describe()}\n-> {response.status_code} {response.text[:500]}\nhost log:\n{logged}"
            )

    try:
        check()
    finally:
        for client in clients.values():
            client.close()
    for name, host in hosts.items():
        assert host.proc is not None and host.proc.poll() is None, f"{name} host exited"
        r = httpx.get(f"{host.url}/__health", timeout=TIMEOUT_S)
        assert r.status_code == 200 and r.json()["ok"] is True, (name, r.text)
