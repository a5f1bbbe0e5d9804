"""The gateway's configuration: one JSON document, validated once per load.

Every fault is reported with the JSON path of the bad value
(``routes[2].auth: unknown issuer "x"``)::

    {
      "routes": [
        {"name": "orders", "prefix": "/api/orders", "methods": ["GET", "POST"],
         "auth": ["jwt:main", "api_key"],        # any of; "none" for public routes
         "scopes": ["orders:read"],              # all required
         "limits": ["per-subject"],              # names from the "limits" section
         "routing": "global",                    # a document in "routing"
         "timeout_ms": 5000, "max_body_bytes": 1048576, "strip_prefix": false}
      ],
      "issuers": {"main": {"issuer": "https://id.example", "audience": "orders-api",
                           "jwks": {"keys": [...]}, "jwks_uri": "https://id.example/jwks",
                           "algorithms": ["RS256", "ES256"], "leeway_s": 30}},
      "routing": {"global": { ...an edge_kv.core.geo document... }},
      "limits": { ...an EDGE_KV_LIMITS document (limits, allow, deny)... },
      "health": {"cooldown_s": 30, "refresh_s": 5},
      "signing": {"expires_in_s": 60}
    }

Routes match by method and path prefix, first match wins. The identity the gateway
forwards (``X-Edge-Subject``, ``X-Edge-Scopes``, ``X-Edge-Issuer``, ``X-Edge-Auth``) comes
only from a verified token or key; client-sent copies are dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_kv.core import httpcache as hc
from edge_kv.core.errors import InvalidInput
from edge_kv.core.geo import GeoConfig, GeoConfigError, parse_geo_config
from edge_kv.core.jwt import JwkSet, JwtPolicy, parse_jwks
from edge_kv.edge.gateway.cache import CacheRule, KvTierRule
from edge_kv.edge.ratelimit.config import ConfigError, LimitsConfig, parse_config

__all__ = [
    "AUTH_API_KEY",
    "AUTH_NONE",
    "GatewayConfig",
    "GatewayConfigError",
    "HealthSettings",
    "IssuerConfig",
    "RouteConfig",
    "load_gateway_config",
    "parse_gateway_config",
]

AUTH_NONE = "none"
AUTH_API_KEY = "api_key"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
MAX_TIMEOUT_MS = 120_000
MAX_BODY_BYTES = 100 << 20
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")  # RFC 6749 scope-token


class GatewayConfigError(InvalidInput):
    """The gateway document is unusable; ``path`` is the JSON path of the fault."""

    code = "invalid_gateway_config"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


@dataclass(frozen=True)
class IssuerConfig:
    name: str
    policy: JwtPolicy
    jwks: JwkSet | None = None
    jwks_uri: str | None = None


@dataclass(frozen=True)
class RouteConfig:
    name: str
    prefix: str
    methods: frozenset[str]
    auth: tuple[str, ...]
    scopes: tuple[str, ...]
    limits: tuple[str, ...]
    routing: str
    timeout_ms: int = 10_000
    max_body_bytes: int = 1 << 20
    strip_prefix: bool = False
    cache: CacheRule | None = None

    def matches(self, method: str, path: str) -> bool:
        if (
            "*" not in self.methods
            and method not in self.methods
            and not (method == "HEAD" and "GET" in self.methods)
        ):
            return False
        return path == self.prefix or path.startswith(self.prefix.rstrip("/") + "/") or self.prefix == "/"

    @property
    def public(self) -> bool:
        return self.auth == (AUTH_NONE,)


@dataclass(frozen=True)
class HealthSettings:
    cooldown_s: float = 30.0
    refresh_s: float = 5.0


@dataclass(frozen=True)
class GatewayConfig:
    routes: tuple[RouteConfig, ...]
    issuers: Mapping[str, IssuerConfig]
    routing: Mapping[str, GeoConfig]
    limits: LimitsConfig
    health: HealthSettings = field(default_factory=HealthSettings)
    signature_expires_in_s: int = 60

    def match(self, method: str, path: str) -> RouteConfig | None:
        return next((r for r in self.routes if r.matches(method, path)), None)


def _obj(value: object, path: str, allowed: Sequence[str], required: Sequence[str] = ()) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise GatewayConfigError(path, f"expected an object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise GatewayConfigError(path, f"unknown field(s) {unknown}; expected some of {sorted(allowed)}")
    for name in required:
        if name not in value:
            raise GatewayConfigError(path, f"missing required field {name!r}")
    return value


def _name(value: object, path: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise GatewayConfigError(
            path, f"expected a name of 1..64 letters, digits, '_', '.', '-', got {value!r}"
        )
    return value


def _int(value: object, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise GatewayConfigError(path, f"must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _number(value: object, path: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise GatewayConfigError(path, f"must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def _str_list(value: object, path: str, pattern: re.Pattern[str], what: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise GatewayConfigError(path, f"expected a list of {what}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not pattern.fullmatch(item):
            raise GatewayConfigError(f"{path}[{i}]", f"expected {what}, got {item!r}")
        out.append(item)
    return tuple(out)


def _issuer(name: str, value: object, path: str) -> IssuerConfig:
    body = _obj(
        value, path, ("issuer", "audience", "jwks", "jwks_uri", "algorithms", "leeway_s", "required_claims")
    )
    jwks = body.get("jwks")
    uri = body.get("jwks_uri")
    if (jwks is None) == (uri is None):
        raise GatewayConfigError(path, "needs exactly one of 'jwks' (inline keys) and 'jwks_uri'")
    if uri is not None and (
        not isinstance(uri, str) or not uri.startswith("https://") or "@" in uri.split("/")[2]
    ):
        # Keys fetched over plain HTTP could be swapped by anyone on the path.
        raise GatewayConfigError(
            f"{path}.jwks_uri", f"expected an https URL without credentials, got {uri!r}"
        )
    keys: JwkSet | None = None
    if jwks is not None:
        try:
            keys = parse_jwks(jwks)
        except InvalidInput as exc:
            raise GatewayConfigError(f"{path}.jwks", str(exc)) from None
    algorithms = body.get("algorithms")
    try:
        policy = JwtPolicy(
            issuer=body.get("issuer"),
            audience=body.get("audience"),
            leeway_s=body.get("leeway_s", 30),
            required_claims=tuple(body.get("required_claims", ("exp",))),
            algorithms=None if algorithms is None else frozenset(algorithms),
        )
    except (InvalidInput, TypeError) as exc:
        raise GatewayConfigError(path, str(exc)) from None
    return IssuerConfig(name, policy, keys, uri)


def _route(i: int, value: object, issuers: Mapping[str, IssuerConfig], doc: Mapping[str, Any]) -> RouteConfig:
    path = f"routes[{i}]"
    body = _obj(
        value,
        path,
        (
            "name",
            "prefix",
            "methods",
            "auth",
            "scopes",
            "limits",
            "routing",
            "timeout_ms",
            "max_body_bytes",
            "strip_prefix",
            "cache",
        ),
        ("prefix", "auth", "routing"),
    )
    name = _name(body.get("name", f"route-{i}"), f"{path}.name")
    prefix = body["prefix"]
    if (
        not isinstance(prefix, str)
        or not prefix.startswith("/")
        or any(c in prefix for c in "?#\\")
        or ".." in prefix
    ):
        raise GatewayConfigError(f"{path}.prefix", f"expected a path starting with '/', got {prefix!r}")
    methods_raw = body.get("methods", list(METHODS))
    if not isinstance(methods_raw, list) or not methods_raw:
        raise GatewayConfigError(f"{path}.methods", f"expected a non-empty list of {list(METHODS)}")
    methods = set()
    for j, m in enumerate(methods_raw):
        # "*" is every method; other tokens (RFC 9110 §9.1) pass through as extension methods.
        if not isinstance(m, str) or not (m == "*" or _METHOD.fullmatch(m)):
            raise GatewayConfigError(
                f"{path}.methods[{j}]", f"expected '*' or a method such as {list(METHODS)}, got {m!r}"
            )
        methods.add(m if m == "*" else m.upper())
    auth_raw = body["auth"]
    auth_list = [auth_raw] if isinstance(auth_raw, str) else auth_raw
    if not isinstance(auth_list, list) or not auth_list:
        raise GatewayConfigError(
            f"{path}.auth", "expected 'none', 'api_key', 'jwt:<issuer>' or a list of them"
        )
    auth: list[str] = []
    for j, a in enumerate(auth_list):
        where = f"{path}.auth" if isinstance(auth_raw, str) else f"{path}.auth[{j}]"
        if a in (AUTH_NONE, AUTH_API_KEY):
            auth.append(a)
        elif isinstance(a, str) and a.startswith("jwt:"):
            if a[4:] not in issuers:
                raise GatewayConfigError(where, f"unknown issuer {a[4:]!r}; known: {sorted(issuers)}")
            auth.append(a)
        else:
            raise GatewayConfigError(where, f"expected 'none', 'api_key' or 'jwt:<issuer>', got {a!r}")
    if AUTH_NONE in auth and len(auth) > 1:
        raise GatewayConfigError(f"{path}.auth", "'none' cannot be combined with other methods")
    scopes = _str_list(body.get("scopes", []), f"{path}.scopes", _SCOPE, "a scope token")
    if scopes and AUTH_NONE in auth:
        raise GatewayConfigError(f"{path}.scopes", "a public route ('auth': 'none') cannot require scopes")
    limits = _str_list(body.get("limits", []), f"{path}.limits", _NAME, "a limit name")
    known_limits = (doc.get("limits") or {}).get("limits", {}) if isinstance(doc.get("limits"), dict) else {}
    for j, n in enumerate(limits):
        if n not in known_limits:
            raise GatewayConfigError(
                f"{path}.limits[{j}]", f"unknown limit {n!r}; known: {sorted(known_limits)}"
            )
    routing = _name(body["routing"], f"{path}.routing")
    if routing not in (doc.get("routing") or {}):
        raise GatewayConfigError(
            f"{path}.routing", f"unknown routing {routing!r}; known: {sorted(doc.get('routing') or {})}"
        )
    strip = body.get("strip_prefix", False)
    if not isinstance(strip, bool):
        raise GatewayConfigError(f"{path}.strip_prefix", "expected true or false")
    return RouteConfig(
        name=name,
        prefix=prefix,
        methods=frozenset(methods),
        auth=tuple(auth),
        scopes=scopes,
        limits=limits,
        routing=routing,
        timeout_ms=_int(body.get("timeout_ms", 10_000), f"{path}.timeout_ms", 1, MAX_TIMEOUT_MS),
        max_body_bytes=_int(body.get("max_body_bytes", 1 << 20), f"{path}.max_body_bytes", 0, MAX_BODY_BYTES),
        strip_prefix=strip,
        cache=None
        if body.get("cache") in (None, False)
        else _cache_rule(body["cache"], f"{path}.cache", auth),
    )


_CTYPE = re.compile(r"[A-Za-z0-9!#$&^_.+\-]{1,64}(/[A-Za-z0-9!#$&^_.+\-]{0,64})?")
_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
_PARAM = re.compile(r"[^\s&=#]{1,128}")


def _bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise GatewayConfigError(path, f"expected true or false, got {value!r}")
    return value


def _cache_rule(value: object, path: str, auth: Sequence[str]) -> CacheRule:
    body = _obj(
        value if value is not True else {},
        path,
        (
            "statuses",
            "query_drop",
            "query_keep_only",
            "key_headers",
            "geo",
            "per_subject",
            "store_set_cookie",
            "store_private",
            "store_authorized",
            "max_body_bytes",
            "strict_s_maxage",
            "kv",
        ),
    )
    statuses_raw = body.get("statuses", sorted(hc.HEURISTIC_STATUSES - {206}))
    if not isinstance(statuses_raw, list) or not statuses_raw:
        raise GatewayConfigError(f"{path}.statuses", "expected a non-empty list of status codes")
    statuses = frozenset(_int(s, f"{path}.statuses[{i}]", 200, 599) for i, s in enumerate(statuses_raw))
    if 206 in statuses:
        raise GatewayConfigError(f"{path}.statuses", "206 cannot be cached: the gateway has no range logic")
    drop = _str_list(
        body.get("query_drop", sorted(hc.DEFAULT_QUERY_DROP)),
        f"{path}.query_drop",
        _PARAM,
        "a query parameter name",
    )
    keep = body.get("query_keep_only")
    keep_only = (
        None
        if keep is None
        else frozenset(_str_list(keep, f"{path}.query_keep_only", _PARAM, "a query parameter name"))
    )
    headers = tuple(
        h.lower()
        for h in _str_list(body.get("key_headers", []), f"{path}.key_headers", _HEADER, "a header name")
    )
    geo = body.get("geo")
    if geo not in (None, "country", "continent"):
        raise GatewayConfigError(f"{path}.geo", f"expected 'country', 'continent' or null, got {geo!r}")
    per_subject = _bool(body.get("per_subject", False), f"{path}.per_subject")
    if per_subject and AUTH_NONE in auth:
        raise GatewayConfigError(f"{path}.per_subject", "a public route has no subject to key on")
    policy = hc.StorePolicy(
        cacheable_statuses=statuses,
        store_set_cookie=_bool(body.get("store_set_cookie", False), f"{path}.store_set_cookie"),
        store_private=_bool(body.get("store_private", False), f"{path}.store_private"),
        store_authorized=_bool(body.get("store_authorized", per_subject), f"{path}.store_authorized"),
        max_body_bytes=_int(body.get("max_body_bytes", 1 << 20), f"{path}.max_body_bytes", 0, 25 << 20),
    )
    key = hc.KeyRule(
        query_drop=frozenset(drop),
        query_keep_only=keep_only,
        headers=headers,
        geo=geo,
        per_subject=per_subject,
    )
    kv_raw = body.get("kv", False)
    kv: KvTierRule | None = None
    if kv_raw is not False:
        kv_body = _obj(
            {} if kv_raw is True else kv_raw, f"{path}.kv", ("min_ttl_s", "max_bytes", "content_types")
        )
        kv = KvTierRule(
            min_ttl_s=_int(kv_body.get("min_ttl_s", 60), f"{path}.kv.min_ttl_s", 60, 365 * 86400),
            max_bytes=_int(kv_body.get("max_bytes", 1 << 20), f"{path}.kv.max_bytes", 0, 25 << 20),
            content_types=tuple(
                t.lower()
                for t in _str_list(
                    kv_body.get("content_types", []),
                    f"{path}.kv.content_types",
                    _CTYPE,
                    "a media type prefix",
                )
            ),
        )
    strict = _bool(body.get("strict_s_maxage", False), f"{path}.strict_s_maxage")
    return CacheRule(key, policy, strict, kv)


def parse_gateway_config(doc: object) -> GatewayConfig:
    """Validate a decoded gateway document; :class:`GatewayConfigError` names the fault."""
    body = _obj(
        doc, "", ("routes", "issuers", "routing", "limits", "health", "signing"), ("routes", "routing")
    )
    issuers_raw = body.get("issuers", {})
    if not isinstance(issuers_raw, dict):
        raise GatewayConfigError("issuers", "expected an object of named issuers")
    issuers = {_name(n, f"issuers[{n!r}]"): _issuer(n, v, f"issuers.{n}") for n, v in issuers_raw.items()}
    routing_raw = body["routing"]
    if not isinstance(routing_raw, dict) or not routing_raw:
        raise GatewayConfigError("routing", "expected an object of named routing documents")
    routing: dict[str, GeoConfig] = {}
    for n, v in routing_raw.items():
        _name(n, f"routing[{n!r}]")
        try:
            routing[n] = parse_geo_config(v)
        except GeoConfigError as exc:
            raise GatewayConfigError(
                f"routing.{n}" + (f".{exc.path}" if exc.path else ""), str(exc).split(": ", 1)[-1]
            ) from None
    limits_raw = body.get("limits", {})
    try:
        limits = parse_config(limits_raw)
    except ConfigError as exc:
        text = str(exc)
        raise GatewayConfigError(
            "", "limits" + text[1:] if text.startswith("$") else f"limits: {text}"
        ) from None
    routes_raw = body["routes"]
    if not isinstance(routes_raw, list) or not routes_raw:
        raise GatewayConfigError("routes", "expected a non-empty list of routes")
    routes = tuple(_route(i, r, issuers, body) for i, r in enumerate(routes_raw))
    names = [r.name for r in routes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise GatewayConfigError("routes", f"route names must be unique; repeated: {dupes}")
    health_raw = _obj(body.get("health", {}), "health", ("cooldown_s", "refresh_s"))
    health = HealthSettings(
        cooldown_s=_number(health_raw.get("cooldown_s", 30), "health.cooldown_s", 1, 3600),
        refresh_s=_number(health_raw.get("refresh_s", 5), "health.refresh_s", 0.5, 600),
    )
    signing = _obj(body.get("signing", {}), "signing", ("expires_in_s",))
    return GatewayConfig(
        routes=routes,
        issuers=issuers,
        routing=routing,
        limits=limits,
        health=health,
        signature_expires_in_s=_int(signing.get("expires_in_s", 60), "signing.expires_in_s", 1, 3600),
    )


def load_gateway_config(text: str) -> GatewayConfig:
    """Parse the JSON text of a gateway document."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise GatewayConfigError("", f"not valid JSON ({exc})") from None
    return parse_gateway_config(doc)
