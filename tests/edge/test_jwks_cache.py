"""The per-isolate JWKS cache (edge_kv.edge.auth.jwks) with a fake fetch and a fake clock:
freshness from Cache-Control within bounds, rotation grace, the unknown-kid refetch limit,
a dead endpoint not failing cached keys, bounded documents; and edge verify_token over it
(HS256, which the core verifies, so no runtime is needed). Edge-safe: runs in Pyodide too.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_kv.core.errors import InvalidInput
from edge_kv.core.jwt import InvalidToken, Jwk, JwtPolicy, b64url_encode, encode_hs
from edge_kv.edge.auth.jwks import JwksCache, JwksCachePolicy, JwksUnavailable, cache_max_age
from edge_kv.edge.auth.jwt import JwtAuthenticator, bearer_token, verify_token
from edge_kv.edge.runtime.webcrypto import FetchedText

URI = "https://idp.example/.well-known/jwks.json"
# RFC 7515 A.3's P-256 public key (valid point); kids vary so each entry is a distinct key.
EC = {
    "kty": "EC",
    "crv": "P-256",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}


def ec_jwks(*kids: str) -> dict[str, Any]:
    return {"keys": [{**EC, "kid": k} for k in kids]}


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeFetch:
    """Serves ``doc`` (a JWKS dict or raw text) with ``cache_control``; counts calls."""

    doc: Any
    cache_control: str | None = "max-age=300"
    status: int = 200
    fail: BaseException | None = None
    gate: asyncio.Event | None = None
    calls: list[str] = field(default_factory=list)

    async def __call__(self, url: str) -> FetchedText:
        self.calls.append(url)
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        import json

        text = self.doc if isinstance(self.doc, str) else json.dumps(self.doc)
        headers = {"cache-control": self.cache_control} if self.cache_control is not None else {}
        return FetchedText(self.status, text, headers)


def make(fetch: FakeFetch, clock: Clock | None = None, **policy: Any) -> tuple[JwksCache, Clock]:
    clock = clock or Clock()
    return JwksCache(JwksCachePolicy(**policy), fetch=fetch, clock=clock), clock


def kids(keys: list[Jwk]) -> list[str | None]:
    return sorted((k.kid for k in keys), key=str)


# --------------------------------------------------------------------------------------
# Cache-Control
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("max-age=120", 120),
        ("public, max-age=3600, must-revalidate", 3600),
        ("MAX-AGE=7", 7),
        ('max-age="60"', 60),
        ("max-age=10, max-age=20", 10),
        ("max-age=-5", None),
        ("max-age=abc", None),
        ("max-age=", None),
        ("no-store", 0),
        ("max-age=600, no-cache", 0),
        ("private", None),
        ("max-age=99999999999999999999", 999999999999),
    ],
)
def test_cache_max_age(value: str | None, expected: int | None) -> None:
    assert cache_max_age(value) == expected


@pytest.mark.parametrize(
    ("header", "ttl"),
    [
        ("max-age=300", 300),
        ("max-age=5", 60),
        ("max-age=999999999", 86_400),
        (None, 300),
        ("no-store", 60),
        ("junk", 300),
    ],
)
def test_ttl_is_bounded(header: str | None, ttl: float) -> None:
    assert JwksCachePolicy().ttl(header) == ttl


@given(st.text(max_size=60))
def test_cache_control_parsing_never_raises_and_ttl_stays_in_bounds(value: str) -> None:
    p = JwksCachePolicy(min_ttl_s=30, max_ttl_s=600, default_ttl_s=120)
    assert 30 <= p.ttl(value) <= 600


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_ttl_s": -1},
        {"min_ttl_s": 100, "max_ttl_s": 50},
        {"default_ttl_s": 10},  # below min_ttl_s
        {"unknown_kid_interval_s": 0},
        {"failure_backoff_s": 0},
        {"max_keys": 0},
        {"max_body_bytes": True},
        {"fetch_timeout_s": float("nan")},
        {"allow_http": 1},
    ],
)
def test_policy_bounds_are_checked(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        JwksCachePolicy(**kwargs)


@pytest.mark.parametrize(
    "uri", ["", "http://idp.example/jwks", "ftp://idp.example/jwks", "https://user:pw@idp.example/j", "/jwks"]
)
async def test_jwks_uri_must_be_https(uri: str) -> None:
    cache, _ = make(FakeFetch(ec_jwks("a")))
    with pytest.raises(InvalidInput):
        await cache.keys(uri)


async def test_plain_http_only_when_allowed() -> None:
    fetch = FakeFetch(ec_jwks("a"))
    cache, _ = make(fetch, allow_http=True)
    assert kids(await cache.keys("http://127.0.0.1:8000/jwks")) == ["a"]


# --------------------------------------------------------------------------------------
# freshness
# --------------------------------------------------------------------------------------


async def test_fetched_once_while_fresh_then_refetched() -> None:
    fetch = FakeFetch(ec_jwks("a", "b"), cache_control="max-age=120")
    cache, clock = make(fetch)
    for _ in range(5):
        assert kids(await cache.keys(URI)) == ["a", "b"]
        assert kids(await cache.keys(URI, kid="a")) == ["a"]
        clock.advance(20)
    assert len(fetch.calls) == 1
    clock.advance(30)  # 130 s after the fetch: expired
    fetch.doc = ec_jwks("b")
    assert kids(await cache.keys(URI)) == ["a", "b"]  # "a" left the set: kept through the grace
    assert len(fetch.calls) == 2
    assert cache.stats(URI)["fetches"] == 2


async def test_max_age_is_clamped() -> None:
    fetch = FakeFetch(ec_jwks("a"), cache_control="max-age=1")
    cache, clock = make(fetch, min_ttl_s=60, max_ttl_s=3600)
    await cache.keys(URI)
    clock.advance(59)
    await cache.keys(URI)
    assert len(fetch.calls) == 1  # max-age=1 counted as 60
    clock.advance(2)
    await cache.keys(URI)
    assert len(fetch.calls) == 2

    fetch.cache_control = "max-age=31536000"
    clock.advance(10_000)
    await cache.keys(URI)
    assert len(fetch.calls) == 3
    clock.advance(3_600)
    await cache.keys(URI)
    assert len(fetch.calls) == 4  # capped at max_ttl_s = 3600


async def test_issuers_are_separate_and_bounded() -> None:
    fetch = FakeFetch(ec_jwks("a"))
    cache, _ = make(fetch, max_issuers=2)
    for host in ("a", "b", "a", "c", "a"):
        await cache.keys(f"https://{host}.example/jwks")
    # a, b, c fetched once each; "b" was evicted when "c" came (a was used more recently).
    assert len(fetch.calls) == 3
    await cache.keys("https://b.example/jwks")
    assert len(fetch.calls) == 4


# --------------------------------------------------------------------------------------
# unknown kid
# --------------------------------------------------------------------------------------


async def test_unknown_kid_refetches_once_per_interval() -> None:
    fetch = FakeFetch(ec_jwks("a"))
    cache, clock = make(fetch, unknown_kid_interval_s=60)
    await cache.keys(URI, kid="a")
    for _ in range(500):
        with pytest.raises(InvalidToken) as err:
            await cache.keys(URI, kid=uuid.uuid4().hex)
        assert err.value.reason == "key" and err.value.status == 401
        clock.advance(0.05)  # 25 s in all
    assert len(fetch.calls) == 2  # the first fetch + one refetch for the whole flood
    clock.advance(36)
    with pytest.raises(InvalidToken):
        await cache.keys(URI, kid="still-unknown")
    assert len(fetch.calls) == 3
    # The known key never needed the endpoint.
    assert kids(await cache.keys(URI, kid="a")) == ["a"]
    assert len(fetch.calls) == 3


async def test_unknown_kid_flood_in_parallel_costs_one_fetch() -> None:
    fetch = FakeFetch(ec_jwks("a"))
    cache, _ = make(fetch)
    await cache.keys(URI)
    results = await asyncio.gather(
        *(cache.keys(URI, kid=uuid.uuid4().hex) for _ in range(50)), return_exceptions=True
    )
    assert all(isinstance(r, InvalidToken) for r in results)
    assert len(fetch.calls) == 2


async def test_a_new_kid_is_picked_up_by_the_refetch() -> None:
    fetch = FakeFetch(ec_jwks("a"))
    cache, clock = make(fetch)
    await cache.keys(URI, kid="a")
    clock.advance(5)
    fetch.doc = ec_jwks("a", "b")  # the issuer publishes a new key
    assert kids(await cache.keys(URI, kid="b")) == ["b"]
    assert len(fetch.calls) == 2


async def test_keys_without_kid_serve_any_kid_like_the_core() -> None:
    fetch = FakeFetch({"keys": [EC]})
    cache, _ = make(fetch)
    assert [k.kid for k in await cache.keys(URI, kid="whatever")] == [None]


async def test_kid_must_be_a_string() -> None:
    cache, _ = make(FakeFetch(ec_jwks("a")))
    with pytest.raises(InvalidToken):
        await cache.keys(URI, kid=7)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# rotation
# --------------------------------------------------------------------------------------


async def test_removed_key_is_kept_through_the_rotation_grace() -> None:
    fetch = FakeFetch(ec_jwks("old"), cache_control="max-age=60")
    cache, clock = make(fetch, rotation_grace_s=600)
    await cache.keys(URI, kid="old")
    fetch.doc = ec_jwks("new")
    clock.advance(61)
    assert kids(await cache.keys(URI, kid="new")) == ["new"]
    assert kids(await cache.keys(URI, kid="old")) == ["old"]  # retired, still accepted
    assert cache.stats(URI)["retired"] == 1
    clock.advance(600)
    with pytest.raises(InvalidToken):
        await cache.keys(URI, kid="old")
    assert kids(await cache.keys(URI)) == ["new"]


async def test_a_key_that_comes_back_is_current_again() -> None:
    fetch = FakeFetch(ec_jwks("a"), cache_control="max-age=60")
    cache, clock = make(fetch, rotation_grace_s=100)
    await cache.keys(URI)
    fetch.doc = ec_jwks("b")
    clock.advance(61)
    await cache.keys(URI)
    fetch.doc = ec_jwks("a", "b")
    clock.advance(61)
    await cache.keys(URI)
    assert cache.stats(URI)["retired"] == 0
    clock.advance(1000)
    fetch.fail = RuntimeError("down")
    assert kids(await cache.keys(URI)) == ["a", "b"]


async def test_zero_grace_drops_removed_keys_at_once() -> None:
    fetch = FakeFetch(ec_jwks("old"), cache_control="max-age=60")
    cache, clock = make(fetch, rotation_grace_s=0)
    await cache.keys(URI)
    fetch.doc = ec_jwks("new")
    clock.advance(61)
    assert kids(await cache.keys(URI)) == ["new"]


async def test_same_kid_new_material_replaces_the_key() -> None:
    rsa = {
        "kty": "RSA",
        "alg": "RS256",
        "kid": "a",
        "e": "AQAB",
        "n": b64url_encode(((1 << 2047) | 12345).to_bytes(256, "big")),
    }
    fetch = FakeFetch(ec_jwks("a"), cache_control="max-age=60")
    cache, clock = make(fetch, rotation_grace_s=0)
    assert [k.kty for k in await cache.keys(URI, kid="a")] == ["EC"]
    fetch.doc = {"keys": [rsa]}
    clock.advance(61)
    assert [k.kty for k in await cache.keys(URI, kid="a")] == ["RSA"]


# --------------------------------------------------------------------------------------
# the endpoint is down or serves garbage
# --------------------------------------------------------------------------------------


async def test_dead_endpoint_does_not_fail_cached_keys() -> None:
    fetch = FakeFetch(ec_jwks("a"), cache_control="max-age=60")
    cache, clock = make(fetch, failure_backoff_s=30, stale_if_error_s=3600)
    await cache.keys(URI, kid="a")
    fetch.fail = ConnectionError("refused")
    clock.advance(61)
    assert kids(await cache.keys(URI, kid="a")) == ["a"]
    assert cache.stats(URI)["failures"] == 1
    assert "refused" in cache.stats(URI)["last_error"]
    for _ in range(100):  # within the back-off: no new attempt, not even for unknown kids
        await cache.keys(URI, kid="a")
        with pytest.raises(InvalidToken):
            await cache.keys(URI, kid="zzz")
    assert len(fetch.calls) == 2
    clock.advance(30)
    await cache.keys(URI, kid="a")
    assert len(fetch.calls) == 3  # one retry per back-off period
    fetch.fail = None
    clock.advance(30)
    await cache.keys(URI, kid="a")
    assert cache.stats(URI)["last_error"] is None
    assert len(fetch.calls) == 4


async def test_stale_keys_end_after_stale_if_error() -> None:
    fetch = FakeFetch(ec_jwks("a"), cache_control="max-age=60")
    cache, clock = make(fetch, stale_if_error_s=600, failure_backoff_s=30)
    await cache.keys(URI)
    fetch.fail = TimeoutError()
    clock.advance(60 + 599)
    assert kids(await cache.keys(URI)) == ["a"]
    clock.advance(31)
    with pytest.raises(JwksUnavailable) as err:
        await cache.keys(URI)
    assert err.value.status == 503


async def test_cold_dead_endpoint_is_unavailable_and_backs_off() -> None:
    fetch = FakeFetch(ec_jwks("a"), fail=OSError("no route"))
    cache, clock = make(fetch, failure_backoff_s=10)
    for _ in range(20):
        with pytest.raises(JwksUnavailable, match="no route"):
            await cache.keys(URI, kid="a")
    assert len(fetch.calls) == 1
    clock.advance(10)
    fetch.fail = None
    assert kids(await cache.keys(URI, kid="a")) == ["a"]
    assert len(fetch.calls) == 2


@pytest.mark.parametrize(
    ("doc", "status", "error"),
    [
        ("not json", 200, "InvalidInput"),
        ({"keys": []}, 200, "no usable"),
        ({"nokeys": 1}, 200, "keys"),
        (ec_jwks("a"), 500, "HTTP 500"),
        (ec_jwks("a"), 304, "HTTP 304"),
        ({"keys": [{**EC, "kid": str(i)} for i in range(11)]}, 200, "at most 10"),
        ({"keys": [{**EC, "kid": "x" * 3000}]}, 200, "larger than"),
        ({"keys": [{**EC, "d": "AAAA"}]}, 200, "private"),
    ],
)
async def test_unusable_documents_never_replace_cached_keys(doc: Any, status: int, error: str) -> None:
    fetch = FakeFetch(ec_jwks("good"), cache_control="max-age=60")
    cache, clock = make(fetch, max_keys=10, max_body_bytes=2048)
    await cache.keys(URI)
    fetch.doc, fetch.status = doc, status
    clock.advance(61)
    assert kids(await cache.keys(URI)) == ["good"]
    assert error in cache.stats(URI)["last_error"]
    # Cold, the same document is a 503.
    cold, _ = make(FakeFetch(doc, status=status), max_keys=10, max_body_bytes=2048)
    with pytest.raises(JwksUnavailable):
        await cold.keys(URI)


async def test_expired_entry_is_served_stale_while_one_request_refreshes() -> None:
    fetch = FakeFetch(ec_jwks("a"), cache_control="max-age=60")
    cache, clock = make(fetch)
    await cache.keys(URI)
    clock.advance(61)
    fetch.gate = asyncio.Event()
    fetch.doc = ec_jwks("a", "b")
    refresher = asyncio.ensure_future(cache.keys(URI))
    await asyncio.sleep(0)
    # While that fetch is in flight, other requests use the expired keys, no second fetch.
    for _ in range(10):
        assert kids(await cache.keys(URI, kid="a")) == ["a"]
    with pytest.raises(InvalidToken):  # unknown kid during the refresh: no extra fetch either
        await cache.keys(URI, kid="b")
    fetch.gate.set()
    assert kids(await refresher) == ["a", "b"]
    assert len(fetch.calls) == 2


# --------------------------------------------------------------------------------------
# edge verify_token over the cache (HS256: verified by the core, no runtime needed)
# --------------------------------------------------------------------------------------

SECRET = b"s" * 32
HS = Jwk.hmac(SECRET, kid="hs-1")
HS_JWKS = {"keys": [{"kty": "oct", "k": b64url_encode(SECRET), "alg": "HS256", "kid": "hs-1"}]}
POLICY = JwtPolicy(issuer="https://idp.example", audience="edge-api")
NOW = 1_800_000_000


def token(**claims: Any) -> str:
    base = {"iss": "https://idp.example", "aud": "edge-api", "sub": "u1", "exp": NOW + 300}
    return encode_hs({**base, **claims}, HS)


async def test_verify_token_through_the_cache() -> None:
    fetch = FakeFetch(HS_JWKS)
    cache, clock = make(fetch, clock=Clock(NOW))
    verified = await verify_token(token(), policy=POLICY, jwks_uri=URI, cache=cache, now=NOW)
    assert verified.subject == "u1" and verified.key.kid == "hs-1"
    auth = JwtAuthenticator(POLICY, jwks_uri=URI, cache=cache, clock=clock)
    assert (await auth.authenticate_header(f"Bearer {token(sub='u2')}")).subject == "u2"
    with pytest.raises(InvalidToken) as err:
        await auth.authenticate(token(exp=NOW - 3600))
    assert err.value.reason == "expired"
    assert len(fetch.calls) == 1


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("eyJhbGciOiJub25lIn0.e30.AAAA", "algorithm"),  # alg none
        ("eyJhbGciOiJIUzI1NiIsImtpZCI6N30.e30.AAAA", "header"),  # kid 7
        ("eyJhbGciOiJSUzI1NiJ9.e30.AAAA", "algorithm"),  # not in the policy's list
        ("a.b", "malformed"),
        ("x" * 9000, "too_large"),
    ],
)
async def test_bad_tokens_are_refused_before_any_fetch(bad: str, reason: str) -> None:
    fetch = FakeFetch(HS_JWKS)
    cache, _ = make(fetch)
    policy = JwtPolicy(algorithms=frozenset({"HS256"}))
    with pytest.raises(InvalidToken) as err:
        await verify_token(bad, policy=policy, jwks_uri=URI, cache=cache, now=NOW)
    assert err.value.reason == reason
    assert fetch.calls == []


async def test_verify_token_with_static_keys_and_wrong_alg() -> None:
    assert (await verify_token(token(), policy=POLICY, keys=[HS], now=NOW)).subject == "u1"
    other = Jwk.hmac(b"o" * 64, alg="HS512", kid="hs-1")
    with pytest.raises(InvalidToken) as err:
        await verify_token(token(), policy=POLICY, keys=[other], now=NOW)
    assert err.value.reason == "algorithm"
    with pytest.raises(InvalidInput):
        await verify_token(token(), policy=POLICY, now=NOW)


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("Bearer abc.def.ghi", True),
        ("bearer  abc.def.ghi ", True),
        ("Basic abc", False),
        ("Bearer", False),
        ("", False),
        (None, False),
        ("Bearer a b", False),
    ],
)
def test_bearer_token(header: str | None, ok: bool) -> None:
    if ok:
        assert bearer_token(header) == "abc.def.ghi"
    else:
        with pytest.raises(InvalidToken):
            bearer_token(header)
