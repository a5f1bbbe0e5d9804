"""Edge rate-limit configuration: named limits, route rules, allow and deny lists.

The configuration is one JSON document, read from the ``EDGE_KV_LIMITS`` var of
``wrangler.toml`` or (overriding it) from a KV key, so limits change without a
redeploy. Parsing is strict: an unknown field, a bad number or an unknown algorithm
raises :class:`ConfigError` naming the offending path, because a typo in a limit must
not silently disable it. Shape::

    {
      "limits": {
        "per-ip": {
          "key": ["ip"],                 # ip | subject | route | global, joined in order
          "backend": "do",               # do (exact) | kv (approximate)
          "on_error": "open",            # open | closed: when the backend fails/times out
          "timeout_ms": 1000,
          "shards": 0,                   # 0: one Durable Object per key; N: hash into N
          "tiers": [
            {"name": "ip-burst", "kind": "token_bucket", "capacity": 20, "refill_rate": 10},
            {"name": "ip-hour", "kind": "sliding_window_counter", "limit": 1000, "window_s": 3600}
          ]
        }
      },
      "routes": [{"prefix": "/limited/", "limits": ["per-ip"]}],
      "allow": ["10.0.0.0/8", "subject:ops"],
      "deny": ["203.0.113.7"]
    }

Tiers use the one policy spec format of :mod:`edge_kv.core.ratelimit_spec` (the origin
limiter reads the same): ``token_bucket`` (capacity, refill_rate), ``sliding_log``
(limit, window_s), ``sliding_window_counter`` (the two-counter approximation: limit,
window_s) and ``fixed_window`` (limit, window_s); ``name`` is required.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge_kv.core.errors import InvalidInput
from edge_kv.core.ratelimit import Policy
from edge_kv.core.ratelimit_spec import policy_from_spec, policy_to_spec

KEY_PARTS = ("ip", "subject", "route", "global")
BACKENDS = ("do", "kv")
ON_ERROR = ("open", "closed")
MAX_TIMEOUT_MS = 30_000
MAX_SHARDS = 1024
MAX_TIERS = 8


class ConfigError(InvalidInput):
    """The limit configuration is invalid; the message names the path of the bad value."""


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One named limit: which request attributes form its key and the tiers applied to it.

    Tiers of one limit share a key and are decided all-or-nothing in one transaction.
    """

    name: str
    key: tuple[str, ...]
    tiers: tuple[Policy, ...]
    backend: str = "do"
    on_error: str = "closed"
    timeout_ms: int = 1000
    shards: int = 0

    def to_json(self) -> dict[str, Any]:
        """The spec as the JSON object it was parsed from (sent to the Durable Object)."""
        return {
            "key": list(self.key),
            "backend": self.backend,
            "on_error": self.on_error,
            "timeout_ms": self.timeout_ms,
            "shards": self.shards,
            "tiers": [policy_to_json(p) for p in self.tiers],
        }


@dataclass(frozen=True, slots=True)
class RouteRule:
    prefix: str
    limits: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AccessList:
    """IP addresses/networks and authenticated subjects."""

    networks: tuple[IpNetwork, ...] = ()
    subjects: frozenset[str] = frozenset()

    def matches(self, ip: str | None, subject: str | None) -> bool:
        if subject is not None and subject in self.subjects:
            return True
        if ip is None or not self.networks:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr.version == net.version and addr in net for net in self.networks)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    limits: Mapping[str, LimitSpec]
    routes: tuple[RouteRule, ...] = ()
    allow: AccessList = AccessList()
    deny: AccessList = AccessList()

    def limit(self, name: str) -> LimitSpec:
        """The named limit; ``KeyError`` if there is none (the edge answers 404)."""
        return self.limits[name]

    def match_route(self, path: str) -> RouteRule | None:
        """The route rule with the longest prefix of ``path``, if any."""
        best: RouteRule | None = None
        for rule in self.routes:
            if path.startswith(rule.prefix) and (best is None or len(rule.prefix) > len(best.prefix)):
                best = rule
        return best

    def limits_for_path(self, path: str) -> tuple[LimitSpec, ...]:
        """Limits of the route rule matching ``path`` (longest prefix wins)."""
        rule = self.match_route(path)
        return () if rule is None else tuple(self.limits[name] for name in rule.limits)


def policy_to_json(policy: Policy) -> dict[str, Any]:
    """The policy in the shared spec format of :mod:`edge_kv.core.ratelimit_spec`."""
    return policy_to_spec(policy)


def _obj(value: object, path: str, allowed: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected an object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ConfigError(f"{path}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    return value


def _int(value: object, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{path}: must be between {lo} and {hi}, got {value}")
    return value


def _choice(value: object, path: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"{path}: must be one of {list(choices)}, got {value!r}")
    return str(value)


def _name(value: object, path: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise ConfigError(f"{path}: expected a name of 1..64 characters, got {value!r}")
    if any(ord(c) < 0x21 or ord(c) > 0x7E or c in '"\\' for c in value):
        raise ConfigError(f"{path}: names are printable ASCII without spaces or quotes, got {value!r}")
    return value


def parse_policy(value: object, path: str) -> Policy:
    """One tier in the shared spec format; unlike the bare spec, ``name`` is required here
    because it is what the ``RateLimit`` headers and the stored state are keyed by."""
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected an object, got {type(value).__name__}")
    _name(value.get("name"), f"{path}.name")
    try:
        return policy_from_spec(value)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def parse_limit(name: str, value: object, path: str) -> LimitSpec:
    body = _obj(value, path, ("key", "backend", "on_error", "timeout_ms", "shards", "tiers"))
    key_raw = body.get("key", ["ip"])
    if isinstance(key_raw, str):
        key_raw = [key_raw]
    if not isinstance(key_raw, list) or not key_raw:
        raise ConfigError(f"{path}.key: expected a non-empty list of {list(KEY_PARTS)}")
    key = tuple(_choice(k, f"{path}.key[{i}]", KEY_PARTS) for i, k in enumerate(key_raw))
    if len(set(key)) != len(key):
        raise ConfigError(f"{path}.key: duplicate parts {key}")
    tiers_raw = body.get("tiers")
    if not isinstance(tiers_raw, list) or not 1 <= len(tiers_raw) <= MAX_TIERS:
        raise ConfigError(f"{path}.tiers: expected a list of 1..{MAX_TIERS} policies")
    tiers = tuple(parse_policy(t, f"{path}.tiers[{i}]") for i, t in enumerate(tiers_raw))
    names = [t.name for t in tiers]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}.tiers: tier names must be unique, got {names}")
    return LimitSpec(
        name=name,
        key=key,
        tiers=tiers,
        backend=_choice(body.get("backend", "do"), f"{path}.backend", BACKENDS),
        on_error=_choice(body.get("on_error", "closed"), f"{path}.on_error", ON_ERROR),
        timeout_ms=_int(body.get("timeout_ms", 1000), f"{path}.timeout_ms", 1, MAX_TIMEOUT_MS),
        shards=_int(body.get("shards", 0), f"{path}.shards", 0, MAX_SHARDS),
    )


def parse_access_list(value: object, path: str) -> AccessList:
    if value is None:
        return AccessList()
    if not isinstance(value, list):
        raise ConfigError(f"{path}: expected a list of IPs, CIDR networks or 'subject:<id>'")
    networks: list[IpNetwork] = []
    subjects: set[str] = set()
    for i, entry in enumerate(value):
        if not isinstance(entry, str) or not entry:
            raise ConfigError(f"{path}[{i}]: expected a non-empty string, got {entry!r}")
        if entry.startswith("subject:"):
            subjects.add(entry[len("subject:") :])
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ConfigError(f"{path}[{i}]: not an IP address or network: {entry!r}") from exc
    return AccessList(tuple(networks), frozenset(subjects))


def parse_config(value: object) -> LimitsConfig:
    """Parse a decoded JSON document (see the module docstring) or raise :class:`ConfigError`."""
    body = _obj(value, "$", ("limits", "routes", "allow", "deny"))
    limits_raw = body.get("limits", {})
    if not isinstance(limits_raw, dict):
        raise ConfigError("$.limits: expected an object of named limits")
    limits = {_name(n, f"$.limits[{n!r}]"): parse_limit(n, v, f"$.limits.{n}") for n, v in limits_raw.items()}
    routes_raw = body.get("routes", [])
    if not isinstance(routes_raw, list):
        raise ConfigError("$.routes: expected a list")
    routes: list[RouteRule] = []
    for i, r in enumerate(routes_raw):
        rb = _obj(r, f"$.routes[{i}]", ("prefix", "limits"))
        prefix = rb.get("prefix")
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise ConfigError(f"$.routes[{i}].prefix: expected a path starting with '/', got {prefix!r}")
        names = rb.get("limits")
        if not isinstance(names, list) or not names:
            raise ConfigError(f"$.routes[{i}].limits: expected a non-empty list of limit names")
        for j, n in enumerate(names):
            if n not in limits:
                raise ConfigError(f"$.routes[{i}].limits[{j}]: unknown limit {n!r}")
        routes.append(RouteRule(prefix, tuple(names)))
    return LimitsConfig(
        limits=limits,
        routes=tuple(routes),
        allow=parse_access_list(body.get("allow"), "$.allow"),
        deny=parse_access_list(body.get("deny"), "$.deny"),
    )


def load_config(text: str) -> LimitsConfig:
    """Parse the JSON text of a configuration."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"limit configuration is not valid JSON: {exc}") from exc
    return parse_config(value)
