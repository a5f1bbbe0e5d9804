"""The gateway: one ordered pipeline per matched route.

    normalise → authenticate → authorise → rate limit → [cache] → choose origin
              → sign and forward (timeouts, failover) → response headers

* **normalise** drops hop-by-hop fields and every identity field a client could forge
  (:mod:`edge_kv.edge.gateway.headers`); the client IP comes only from
  ``CF-Connecting-IP``, geo facts only from ``request.cf``.
* **authenticate** tries the route's methods in order (``jwt:<issuer>``: an
  ``Authorization: Bearer`` JWT; ``api_key``: an ``X-Api-Key`` hashed in KV). A credential
  that is presented but invalid is a 401 at once (no fall-through to weaker methods);
  none presented is a 401 with ``WWW-Authenticate: Bearer`` (RFC 6750).
* **authorise**: every scope the route lists must be granted, else 403
  ``insufficient_scope``.
* **rate limit**: the route's limits from the document's ``limits`` section, keyed on the
  verified subject, the client IP and the route; 429/403/503 with the RateLimit headers.
* **choose origin**: :func:`edge_kv.core.geo.route` with the isolate's health marks;
  residency always holds; nothing allowed and healthy → 503 with ``Retry-After``.
* **sign and forward**: the identity goes in ``X-Edge-Subject``/``-Scopes``/``-Issuer``/
  ``-Auth``/``-Client-IP``/``-Country``/``-Continent``, the body's ``Content-Digest``
  (RFC 9530) is added and the request signed (RFC 9421, ``hmac-sha256``, keys from the
  ``EDGE_KV_SIGNING_KEYS`` secret, newest key signs). No answer within the route's
  ``timeout_ms`` is 504, a failed connection 502. An origin that fails (connection,
  timeout, 5xx) is marked unhealthy and, for idempotent methods or requests carrying
  ``Idempotency-Key``, the request moves on to the next allowed origin within what is left
  of its time budget.
* **response headers**: hop-by-hop dropped, ``Via`` added, ``X-Edge-Origin``,
  ``X-Edge-Route-Reason``, ``Server-Timing`` (time per stage) and the RateLimit headers.

Every answer the gateway makes itself is an RFC 9457 problem body. The response body of
the origin streams through.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from edge_kv.core import httpcache as hc
from edge_kv.core import httpsig
from edge_kv.core.errors import EdgeKvError, InvalidInput, LockAcquireTimeout, Unavailable
from edge_kv.core.geo import route as geo_route
from edge_kv.core.jwt import InvalidToken
from edge_kv.edge.auth.api_keys import API_KEY_HEADER, UnknownApiKey, api_key_record
from edge_kv.edge.auth.jwt import bearer_token, verify_token
from edge_kv.edge.auth.service_token import require_service_token
from edge_kv.edge.config_source import ConfigSource, ConfigVars
from edge_kv.edge.env import env_binding, env_str
from edge_kv.edge.gateway.cache import CacheRule, ResponseCache
from edge_kv.edge.gateway.config import (
    AUTH_API_KEY,
    AUTH_NONE,
    IDEMPOTENT_METHODS,
    GatewayConfig,
    RouteConfig,
    load_gateway_config,
)
from edge_kv.edge.gateway.headers import forwardable_request_headers, forwardable_response_headers
from edge_kv.edge.gateway.health import HealthBoard
from edge_kv.edge.http import json_response, problem_response, read_json_object
from edge_kv.edge.locks.client import EdgeLock
from edge_kv.edge.ratelimit.blockcache import BlockCache
from edge_kv.edge.ratelimit.enforce import build_limiter, refusal
from edge_kv.edge.ratelimit.keys import client_ip
from edge_kv.edge.runtime import (
    OriginResponse,
    OriginTimeout,
    OriginUnreachable,
    fetch_origin,
    read_body,
    request_body,
    request_cf,
    request_headers,
    request_method,
    streaming_response,
)

__all__ = ["GATEWAY_VARS", "SIGNING_KEYS_VAR", "Gateway", "Identity", "ServerTiming"]

GATEWAY_VARS = ConfigVars(
    document="EDGE_KV_GATEWAY",
    kv_key="EDGE_KV_GATEWAY_KV_KEY",
    kv_binding="EDGE_KV_GATEWAY_KV",
    cache_s="EDGE_KV_GATEWAY_CACHE_S",
    empty_document="",
)
SIGNING_KEYS_VAR = "EDGE_KV_SIGNING_KEYS"
PURGE_PATH = "/__gateway/purge"
VIA = "1.1 edge-kv"
SIGNED_COMPONENTS = (
    "@method",
    "@target-uri",
    "content-digest",
    "x-edge-subject",
    "x-edge-scopes",
    "x-edge-issuer",
    "x-edge-auth",
    "x-edge-client-ip",
)
MAX_ATTEMPTS = 3


class SigningKeysMissing(Unavailable):
    """The gateway cannot sign (no or bad ``EDGE_KV_SIGNING_KEYS``): fail closed. 503."""

    code = "signing_keys_missing"


class NoOrigin(Unavailable):
    """No allowed origin is healthy (residency and health together). 503 + Retry-After."""

    code = "no_origin"


@dataclass(frozen=True)
class Identity:
    """Who is calling, as verified by the authenticate stage (never from client headers)."""

    method: str = AUTH_NONE
    subject: str = ""
    scopes: tuple[str, ...] = ()
    issuer: str = ""


@dataclass
class ServerTiming:
    """``Server-Timing`` entries, one per stage, in milliseconds."""

    clock: Callable[[], float] = time.perf_counter
    entries: list[tuple[str, float]] = field(default_factory=list)
    _mark: float = 0.0

    def __post_init__(self) -> None:
        self._mark = self.clock()

    def lap(self, name: str) -> None:
        now = self.clock()
        self.entries.append((name, (now - self._mark) * 1000))
        self._mark = now

    def header(self) -> str:
        return ", ".join(f"{name};dur={ms:.1f}" for name, ms in self.entries)


def _keyring(env: Any) -> httpsig.Keyring:
    """``EDGE_KV_SIGNING_KEYS``: a JSON object ``{"keyid": "<hex secret>", ...}`` (at least
    32 bytes each, e.g. ``secrets.token_hex(32)``; the last key signs, the origin accepts
    all of them: the same format as the origin's ``keyring_from_env``)."""
    raw = env_str(env, SIGNING_KEYS_VAR)
    if raw is None:
        raise SigningKeysMissing(
            f"the gateway cannot sign forwarded requests: set the {SIGNING_KEYS_VAR} secret"
        )
    return _parse_keyring(raw)


@functools.lru_cache(maxsize=4)
def _parse_keyring(raw: str) -> httpsig.Keyring:
    """Parsed once per secret value, not per request (a rotation is a new value)."""
    try:
        return httpsig.Keyring.from_json(raw)
    except ValueError as exc:
        print(f"edge_kv: {SIGNING_KEYS_VAR} is unusable: {exc}")
        raise SigningKeysMissing(f"{SIGNING_KEYS_VAR} is unusable (see the Worker log)") from None


def _unauthorized(detail: str, *, error: str | None = None, realm: str = "edge-kv") -> Any:
    """401 with an RFC 6750 challenge. The description quotes what the client sent, so it is
    cut down to the characters a quoted-string allows (printable ASCII, no ``"``/``\\``):
    anything else would make the runtime's ``Headers`` refuse the value (a 500)."""
    challenge = f'Bearer realm="{realm}"'
    if error:
        safe = "".join(c for c in detail if " " <= c <= "~" and c not in '"\\')[:200]
        challenge += f', error="{error}", error_description="{safe}"'
    return problem_response(401, detail, headers=[("www-authenticate", challenge)])


class Gateway:
    """The pipeline over a configuration source. Keep one at module scope.

    ``handle`` answers a request that a configured route matches, or returns ``None`` so
    the Worker's other routes can answer it.
    """

    def __init__(
        self,
        source: ConfigSource[GatewayConfig] | None = None,
        *,
        health: HealthBoard | None = None,
        block_cache: BlockCache | None = None,
        clock: Callable[[], float] = time.time,
        draw: Callable[[], float] = random.random,
        fetch: Callable[..., Any] = fetch_origin,
        cache: ResponseCache | None = None,
    ) -> None:
        self.cache = cache if cache is not None else ResponseCache()
        self.source = source if source is not None else ConfigSource(load_gateway_config, GATEWAY_VARS)
        self.health = health if health is not None else HealthBoard(clock)
        self.block_cache = block_cache if block_cache is not None else BlockCache()
        self.clock = clock
        self.draw = draw
        self.fetch = fetch

    async def config(self, env: Any) -> GatewayConfig | None:
        if env_str(env, GATEWAY_VARS.document) is None and env_str(env, GATEWAY_VARS.kv_key) is None:
            return None
        try:
            return await self.source.get(env)
        except InvalidInput as exc:
            print(f"edge_kv: invalid {GATEWAY_VARS.document}: {exc}")
            raise EdgeKvError("the gateway configuration is invalid (see the Worker log)") from None

    async def handle(self, request: Any, env: Any, ctx: Any) -> Any | None:
        try:
            config = await self.config(env)
        except EdgeKvError as exc:
            return problem_response(500, exc.detail)
        if config is None:
            return None
        method = request_method(request)
        url = urlsplit(str(request.url))
        if url.path == PURGE_PATH:
            try:
                return await self._purge(request, env, method)
            except EdgeKvError as exc:
                return problem_response(exc.status, exc.detail or None, code=exc.code)
        route = config.match(method, url.path)
        if route is None:
            return None
        try:
            return await self._run(config, route, request, env, ctx, method, url)
        except EdgeKvError as exc:
            extra = [("retry-after", "5")] if isinstance(exc, NoOrigin) else []
            return problem_response(exc.status, exc.detail or None, headers=extra, code=exc.code)

    async def _run(
        self,
        config: GatewayConfig,
        route: RouteConfig,
        request: Any,
        env: Any,
        ctx: Any,
        method: str,
        url: Any,
    ) -> Any:
        timing = ServerTiming()
        incoming = request_headers(request)
        ip = client_ip(request.headers.get)
        cf = request_cf(request)
        outgoing = forwardable_request_headers(incoming)
        timing.lap("normalise")

        identity = await self._authenticate(config, route, request, env)
        if not isinstance(identity, Identity):
            return identity  # a 401 problem
        timing.lap("auth")
        missing = [s for s in route.scopes if s not in identity.scopes]
        if missing:
            challenge = f'Bearer error="insufficient_scope", scope="{" ".join(route.scopes)}"'
            return problem_response(
                403, f"missing scope(s): {', '.join(missing)}", headers=[("www-authenticate", challenge)]
            )

        limit_headers: tuple[tuple[str, str], ...] = ()
        if route.limits:
            verdict = await build_limiter(env, config.limits, self.block_cache).check(
                tuple(config.limits.limits[n] for n in route.limits),
                ip=ip,
                subject=identity.subject or None,
                route=route.name,
            )
            if not verdict.allowed:
                return refusal(verdict)
            limit_headers = verdict.headers
        timing.lap("limit")

        # A GET/HEAD body has no defined meaning (RFC 9110 §9.3.1): never forwarded, so a
        # "fat GET" cannot change what a cached URL answers.
        body = (
            b"" if method in ("GET", "HEAD") else await request_body(request, max_bytes=route.max_body_bytes)
        )
        keyring = _keyring(env)
        kv = env_binding(env, "EDGE_KV_GATEWAY_KV", "KV")
        if kv is not None and self.health.due(config.health.refresh_s) and ctx is not None:
            ctx.waitUntil(_future(self.health.refresh(kv)))
        timing.lap("prepare")

        async def forward(extra: list[tuple[str, str]] | None = None) -> tuple[OriginResponse, str, str]:
            headers_out = outgoing if not extra else [*_without_conditionals(outgoing), *extra]
            return await self._forward(
                config, route, method, url, headers_out, body, identity, ip, cf, keyring, kv, ctx, timing
            )

        if route.cache is not None and method in ("GET", "HEAD"):
            return await self._cached(
                route,
                route.cache,
                method,
                str(request.url),
                incoming,
                identity,
                cf,
                forward,
                ctx,
                timing,
                limit_headers,
                kv,
                config.health.refresh_s,
                getattr(env, "LOCKS", None),
            )
        response, decision_origin, reason = await forward()
        if route.cache is not None and method not in SAFE_METHODS and response.status < 400:
            targets = hc.invalidation_targets(method, response.status, str(request.url), response.headers)
            keys = [self.cache.key(route.cache, t, incoming, cf, identity.subject) for t in targets]
            store = self.cache.store_for(route.cache, kv)
            if keys and ctx is not None:
                ctx.waitUntil(_future(self.cache.invalidate(keys, store)))
            elif keys:
                await self.cache.invalidate(keys, store)
        headers = forwardable_response_headers(response.headers)
        headers += [
            ("via", VIA),
            ("x-edge-origin", decision_origin),
            ("x-edge-route-reason", reason),
            *limit_headers,
        ]
        timing.lap("respond")
        headers.append(("server-timing", timing.header()))
        return streaming_response(response.status, headers, None if method == "HEAD" else response.body)

    async def _purge(self, request: Any, env: Any, method: str) -> Any:
        """``POST /__gateway/purge`` (service token): ``{"urls": [...], "prefixes": [...],
        "tags": [...]}``. Recorded in KV before answering, so every isolate and tier honours
        it within its refresh period; this isolate at once."""
        if method != "POST":
            return problem_response(405, "use POST", headers=[("allow", "POST")])
        require_service_token(env, request.headers.get("authorization"))
        body = await read_json_object(request)
        unknown = sorted(set(body) - {"urls", "prefixes", "tags"})
        if unknown:
            raise InvalidInput(f"unknown field(s) {unknown}; expected urls, prefixes, tags")
        lists: dict[str, list[str]] = {}
        for name in ("urls", "prefixes", "tags"):
            value = body.get(name, [])
            if (
                not isinstance(value, list)
                or len(value) > 1000
                or not all(isinstance(v, str) and v for v in value)
            ):
                raise InvalidInput(f"'{name}' must be a list of at most 1000 non-empty strings")
            lists[name] = value
        try:
            urls = [hc.normalize_url(u) for u in lists["urls"]]
            prefixes = [hc.normalize_url(u) for u in lists["prefixes"]]
        except InvalidInput as exc:
            raise InvalidInput(f"not an absolute http(s) URL: {exc}") from None
        kv = env_binding(env, "EDGE_KV_GATEWAY_KV", "KV")
        await self.cache.purges.record(kv, self.clock(), urls=urls, prefixes=prefixes, tags=lists["tags"])
        return json_response({"purged": {"urls": urls, "prefixes": prefixes, "tags": lists["tags"]}})

    async def _cached(
        self,
        route: RouteConfig,
        rule: CacheRule,
        method: str,
        url: str,
        incoming: list[tuple[str, str]],
        identity: Identity,
        cf: dict[str, Any],
        forward: Callable[..., Awaitable[tuple[OriginResponse, str, str]]],
        ctx: Any,
        timing: ServerTiming,
        limit_headers: tuple[tuple[str, str], ...],
        kv: Any = None,
        refresh_s: float = 5.0,
        locks: Any = None,
    ) -> Any:
        """The cache stage (see :mod:`edge_kv.edge.gateway.cache`)."""
        # A request the gateway authenticated counts as authorised (RFC 9111 §3.5), whatever
        # header carried the credential: not stored for others unless the rule says so.
        storable_headers = (
            incoming if identity.method == AUTH_NONE else [*incoming, ("authorization", "(edge)")]
        )
        key = self.cache.key(rule, url, incoming, cf, identity.subject)
        now = self.clock()
        if kv is not None and ctx is not None and now - self.cache.purges.refreshed_at >= refresh_s:
            self.cache.purges.refreshed_at = now  # one refresh at a time per isolate
            ctx.waitUntil(_future(self.cache.purges.refresh(kv, now)))
        found = await self.cache.lookup(rule, key, incoming, now, self.cache.store_for(rule, kv))
        timing.lap("cache")
        extra = [("via", VIA), *limit_headers]
        entry, fresh = found.entry, found.freshness

        def from_cache(stored: hc.StoredResponse, body: bytes, outcome: str, ttl: float, origin: str) -> Any:
            age = hc.current_age(stored, self.clock())
            headers = [(n, v) for n, v in stored.headers if n.lower() not in ("age", "content-length")]
            headers += [
                ("age", hc.age_header(age)),
                ("cache-status", hc.cache_status_for(outcome, ttl=ttl)),
                ("x-cache", hc.x_cache_label(outcome)),
                ("x-edge-origin", origin),
                *extra,
            ]
            timing.lap("respond")
            headers.append(("server-timing", timing.header()))
            if hc.client_conditional(incoming, stored):
                keep = {
                    "cache-control",
                    "content-location",
                    "date",
                    "etag",
                    "expires",
                    "vary",
                    "last-modified",
                }
                small = [(n, v) for n, v in headers if n.lower() in keep or n.lower() not in _ENTITY_FIELDS]
                return streaming_response(304, small, None)
            return streaming_response(stored.status, headers, None if method == "HEAD" else body)

        def revalidate_in_background() -> None:
            if found.variant_key in self.cache.revalidating or ctx is None or entry is None:
                return
            if self.cache.revalidated_at.get(found.variant_key, -math.inf) >= now:
                return  # one finished after this request looked: the stored copy is new
            self.cache.revalidating.add(found.variant_key)

            async def run() -> None:
                lease = None
                try:
                    if locks is not None:
                        # Across isolates: a short Durable Object lease per key; whoever does
                        # not get it leaves the revalidation to its holder. The lease expires
                        # by itself if the holder dies.
                        lease = EdgeLock(
                            locks, "cache:" + _digest(found.variant_key), ttl_ms=REVALIDATION_LEASE_MS
                        )
                        try:
                            await lease.acquire()
                        except LockAcquireTimeout:
                            lease = None
                            return
                    await self._refetch(rule, key, found, incoming, storable_headers, forward, "GET", url)
                except Exception as exc:  # the stale copy stays; the next request tries again
                    print(f"edge_kv: background revalidation of {key[:120]} failed: {exc}")
                finally:
                    if lease is not None:
                        with contextlib.suppress(Exception):
                            await lease.release()
                    self.cache.revalidating.discard(found.variant_key)
                    self.cache.revalidated_at[found.variant_key] = self.clock()
                    self.cache.forget_old(self.clock())

            ctx.waitUntil(_future(run()))

        if entry is not None and fresh is not None and entry.stored is not None:
            if fresh.action == "hit":
                return from_cache(entry.stored, entry.body, "hit", fresh.ttl, entry.origin)
            if fresh.action == "stale-while-revalidate":
                revalidate_in_background()
                return from_cache(entry.stored, entry.body, "stale", fresh.ttl, entry.origin)
            try:
                result = await self._refetch(
                    rule, key, found, incoming, storable_headers, forward, method, url
                )
            except (OriginTimeout, OriginUnreachable, NoOrigin):
                if fresh.stale_if_error_ok:
                    return from_cache(entry.stored, entry.body, "error-stale", fresh.ttl, entry.origin)
                raise
            if result.outcome == "error" and fresh.stale_if_error_ok:
                return from_cache(entry.stored, entry.body, "error-stale", fresh.ttl, entry.origin)
            if result.outcome == "revalidated" and result.stored is not None:
                ttl = hc.evaluate(
                    result.stored, incoming, self.clock(), strict_s_maxage=rule.strict_s_maxage
                ).ttl
                return from_cache(result.stored, entry.body, "revalidated", ttl, entry.origin)
            return self._answer(result, "expired", timing, extra)

        async def fill() -> _Fetched:
            return await self._refetch(rule, key, found, incoming, storable_headers, forward, method, url)

        result, collapsed = await self.cache.coalesce(f"{method} {key}", fill)
        if collapsed and not self._shareable(result, incoming):
            result = await fill()  # another variant, or not storable (maybe private): fetch our own
        return self._answer(result, "miss", timing, extra)

    def _shareable(self, result: _Fetched, incoming: list[tuple[str, str]]) -> bool:
        if result.stored is None:
            return False
        return hc.vary_matches(result.stored, incoming)

    def _answer(
        self, result: _Fetched, outcome: str, timing: ServerTiming, extra: list[tuple[str, str]]
    ) -> Any:
        label = outcome if result.was_stored or outcome == "expired" else "bypass"
        status_text = hc.cache_status_for(label, stored=result.was_stored, fwd_status=result.status)
        headers = forwardable_response_headers(result.headers)
        headers += [
            ("cache-status", status_text),
            ("x-cache", hc.x_cache_label(label)),
            ("x-edge-origin", result.origin),
            ("x-edge-route-reason", result.reason),
            *extra,
        ]
        timing.lap("respond")
        headers.append(("server-timing", timing.header()))
        return streaming_response(result.status, headers, None if result.head else result.body)

    async def _refetch(
        self,
        rule: CacheRule,
        key: str,
        found: Any,
        incoming: list[tuple[str, str]],
        storable_headers: list[tuple[str, str]],
        forward: Callable[..., Awaitable[tuple[OriginResponse, str, str]]],
        method: str = "GET",
        url: str = "",
    ) -> _Fetched:
        """Ask the origin (conditionally when a stored copy has validators) and store what
        may be stored."""
        entry = found.entry
        conditional = hc.conditional_headers(entry.stored) if entry is not None and entry.stored else []
        request_time = self.clock()
        response, origin, reason = await forward(conditional or None)
        response_time = self.clock()
        if (
            response.status == 304
            and entry is not None
            and entry.stored is not None
            and hc.not_modified_matches(entry.stored, response.headers)
        ):
            merged = hc.merge_not_modified(entry.stored, response.headers, request_time, response_time)
            await self.cache.refresh(found.variant_key, entry, merged, response_time, found.store)
            return _Fetched(200, list(merged.headers), entry.body, origin, reason, "revalidated", merged)
        if response.status >= 500:
            body = await read_body(response)
            return _Fetched(response.status, response.headers, body, origin, reason, "error", None)
        body = await read_body(response)
        stored = await self.cache.store_response(
            rule,
            key,
            method,
            storable_headers,
            response.status,
            response.headers,
            body,
            request_time,
            response_time,
            origin,
            url,
            found.store,
        )
        return _Fetched(
            response.status, response.headers, body, origin, reason, "fetched", stored, method == "HEAD"
        )

    async def _authenticate(self, config: GatewayConfig, route: RouteConfig, request: Any, env: Any) -> Any:
        if route.public:
            return Identity()
        authorization = request.headers.get("authorization")
        api_key = request.headers.get(API_KEY_HEADER)
        for method in route.auth:
            if method.startswith("jwt:") and authorization:
                issuer = config.issuers[method[4:]]
                try:
                    verified = await verify_token(
                        bearer_token(authorization),
                        policy=issuer.policy,
                        keys=issuer.jwks,
                        jwks_uri=issuer.jwks_uri if issuer.jwks is None else None,
                        now=self.clock(),
                    )
                except InvalidToken as exc:
                    return _unauthorized(str(exc), error=getattr(exc, "error", "invalid_token"))
                return Identity(method, verified.subject or "", verified.scopes, verified.issuer or "")
            if method == AUTH_API_KEY and api_key:
                try:
                    record = await api_key_record(env, api_key, now=self.clock())
                except UnknownApiKey as exc:
                    return _unauthorized(str(exc), error="invalid_token")
                return Identity(method, record.subject, record.scopes, "api_key")
        return _unauthorized("credentials are required: " + " or ".join(route.auth))

    async def _forward(
        self,
        config: GatewayConfig,
        route: RouteConfig,
        method: str,
        url: Any,
        outgoing: list[tuple[str, str]],
        body: bytes,
        identity: Identity,
        ip: str | None,
        cf: dict[str, Any],
        keyring: httpsig.Keyring,
        kv: Any,
        ctx: Any,
        timing: ServerTiming,
    ) -> tuple[OriginResponse, str, str]:
        geo = config.routing[route.routing]
        may_retry = method in IDEMPOTENT_METHODS or any(n.lower() == "idempotency-key" for n, _ in outgoing)
        deadline = time.monotonic() + route.timeout_ms / 1000
        path = url.path
        if route.strip_prefix and route.prefix != "/":
            path = path[len(route.prefix.rstrip("/")) :] or "/"
        query = f"?{url.query}" if url.query else ""
        identity_headers = [
            ("x-edge-subject", identity.subject),
            ("x-edge-scopes", " ".join(identity.scopes)),
            ("x-edge-issuer", identity.issuer),
            ("x-edge-auth", identity.method),
            ("x-edge-client-ip", ip or ""),
            ("x-edge-country", str(cf.get("country") or "")),
            ("x-edge-continent", str(cf.get("continent") or "")),
            ("x-forwarded-proto", url.scheme or "https"),
            ("content-digest", httpsig.content_digest(body)),
            ("via", VIA),
        ]
        tried: list[str] = []
        last_error: EdgeKvError | None = None
        last_response: tuple[OriginResponse, str, str] | None = None
        for _attempt in range(MAX_ATTEMPTS):
            marks: dict[str, float | None] = {
                k.split("/", 1)[1]: v
                for k, v in self.health.snapshot().items()
                if k.startswith(route.routing + "/")
            }
            for name in tried:
                marks[name] = None
            decision = geo_route(geo, cf, unhealthy=marks, now=self.clock(), draw=self.draw())
            timing.lap("route")
            if decision.origin is None:
                if last_response is not None:
                    return last_response  # the last origin's own 5xx passes through
                if last_error is not None:
                    raise NoOrigin(
                        f"every allowed origin failed or is marked unhealthy (last: {last_error.detail}); "
                        f"{decision.header_value()}"
                    )
                raise NoOrigin(f"no allowed origin is available: {decision.header_value()}")
            origin = decision.origin
            target = origin.url.rstrip("/") + path + query
            request_for_signing = httpsig.HttpRequest.build(method, target, identity_headers)
            signed = httpsig.sign_request(
                request_for_signing,
                keyring,
                now=int(self.clock()),
                components=SIGNED_COMPONENTS,
                expires_in=config.signature_expires_in_s,
            )
            headers = outgoing + identity_headers + signed.items()
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                raise OriginTimeout(f"the route's time budget of {route.timeout_ms} ms is spent")
            tried.append(origin.name)
            try:
                response = await self.fetch(target, method, headers, body or None, timeout_ms=remaining_ms)
            except (OriginTimeout, OriginUnreachable) as exc:
                timing.lap("origin")
                self._mark(route, origin.name, config, kv, ctx)
                last_error = exc
                if not may_retry:
                    raise
                continue
            timing.lap("origin")
            result = (response, origin.name, decision.header_value())
            if response.status >= 500:
                self._mark(route, origin.name, config, kv, ctx)
                last_response = result
                if may_retry and time.monotonic() < deadline:
                    continue
            return result
        if last_response is not None:
            return last_response
        assert last_error is not None
        raise NoOrigin(f"{MAX_ATTEMPTS} origins failed (last: {last_error.detail})")

    def _mark(self, route: RouteConfig, origin: str, config: GatewayConfig, kv: Any, ctx: Any) -> None:
        origin_id = f"{route.routing}/{origin}"
        until = self.health.mark(origin_id, config.health.cooldown_s)
        if kv is not None and ctx is not None:
            ctx.waitUntil(_future(self.health.publish(kv, origin_id, until)))


@dataclass
class _Fetched:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    origin: str
    reason: str
    outcome: str
    stored: hc.StoredResponse | None  # what the cache now holds for it, if anything
    head: bool = False

    @property
    def was_stored(self) -> bool:
        return self.stored is not None


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_CONDITIONALS = frozenset(
    {"if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "if-range"}
)
_ENTITY_FIELDS = frozenset(
    {"content-type", "content-length", "content-encoding", "content-language", "content-range"}
)


def _without_conditionals(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(n, v) for n, v in headers if n.lower() not in _CONDITIONALS]


REVALIDATION_LEASE_MS = 30_000


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:48]


def _future(coro: Any) -> Any:
    import asyncio

    return asyncio.ensure_future(coro)
