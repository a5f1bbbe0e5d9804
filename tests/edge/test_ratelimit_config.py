"""Limit configuration parsing, trusted keying (edge-safe: runs in Pyodide too)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edge_kv.core.ratelimit import SlidingWindowCounter, TokenBucket
from edge_kv.edge.ratelimit.config import ConfigError, load_config, parse_config
from edge_kv.edge.ratelimit.keys import client_ip, ip_key, limit_key, object_name

GOOD: dict[str, Any] = {
    "limits": {
        "per-ip": {
            "key": ["ip"],
            "on_error": "open",
            "tiers": [
                {"name": "burst", "kind": "token_bucket", "capacity": 20, "refill_rate": 10},
                {"name": "hour", "kind": "sliding_window_counter", "limit": 1000, "window_s": 3600},
            ],
        },
        "per-user": {
            "key": ["subject", "route"],
            "backend": "kv",
            "shards": 4,
            "tiers": [{"name": "user", "kind": "fixed_window", "limit": 5, "window_s": 1}],
        },
    },
    "routes": [
        {"prefix": "/api/", "limits": ["per-ip"]},
        {"prefix": "/api/write/", "limits": ["per-ip", "per-user"]},
    ],
    "allow": ["10.0.0.0/8", "subject:ops"],
    "deny": ["203.0.113.7", "2001:db8::/32"],
}


def test_parses_a_full_document() -> None:
    cfg = parse_config(GOOD)
    ip = cfg.limit("per-ip")
    assert ip.on_error == "open" and ip.backend == "do" and ip.shards == 0
    assert isinstance(ip.tiers[0], TokenBucket) and ip.tiers[0].capacity == 20
    assert isinstance(ip.tiers[1], SlidingWindowCounter) and ip.tiers[1].window_ms == 3_600_000
    user = cfg.limit("per-user")
    assert user.backend == "kv" and user.key == ("subject", "route") and user.on_error == "closed"
    # Round trip through the JSON the Durable Object receives.
    again = parse_config({"limits": {"per-ip": ip.to_json()}}).limit("per-ip")
    assert again == ip


def test_longest_route_prefix_wins() -> None:
    cfg = parse_config(GOOD)
    assert [s.name for s in cfg.limits_for_path("/api/x")] == ["per-ip"]
    assert [s.name for s in cfg.limits_for_path("/api/write/1")] == ["per-ip", "per-user"]
    assert cfg.limits_for_path("/other") == ()


def test_access_lists() -> None:
    cfg = parse_config(GOOD)
    assert cfg.allow.matches("10.1.2.3", None)
    assert cfg.allow.matches("8.8.8.8", "ops")
    assert not cfg.allow.matches("8.8.8.8", "dev")
    assert cfg.deny.matches("203.0.113.7", None)
    assert cfg.deny.matches("2001:db8::1", None)
    assert not cfg.deny.matches("203.0.113.8", None)
    assert not cfg.deny.matches("not-an-ip", None)
    assert not cfg.deny.matches(None, None)


def _with(path: list[str | int], value: object) -> dict[str, Any]:
    doc: Any = json.loads(json.dumps(GOOD))
    target = doc
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return dict(doc)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["limits", "per-ip", "tiers", 0, "kind"], "leaky", "unknown policy kind"),
        (["limits", "per-ip", "tiers", 0, "capacity"], -1, "capacity"),
        (["limits", "per-ip", "tiers", 0, "capacity"], 1.5, "capacity"),
        (["limits", "per-ip", "tiers", 0, "refill_rate"], 0, "refill_rate"),
        (["limits", "per-ip", "tiers", 0, "colour"], "red", "unknown field"),
        (["limits", "per-ip", "tiers", 1, "name"], "burst", "unique"),
        (["limits", "per-ip", "tiers", 0, "name"], 'bad"name', "printable"),
        (["limits", "per-ip", "key"], ["x-forwarded-for"], "key"),
        (["limits", "per-ip", "key"], ["ip", "ip"], "duplicate"),
        (["limits", "per-ip", "backend"], "redis", "backend"),
        (["limits", "per-ip", "on_error"], "maybe", "on_error"),
        (["limits", "per-ip", "timeout_ms"], 0, "timeout_ms"),
        (["limits", "per-ip", "shards"], 5000, "shards"),
        (["limits", "per-ip", "tiers"], [], "tiers"),
        (["routes", 0, "limits"], ["nope"], "unknown limit"),
        (["routes", 0, "prefix"], "api", "prefix"),
        (["allow", 0], "10.0.0.0/33", "allow"),
        (["deny"], "1.2.3.4", "deny"),
        (["extra"], 1, "unknown field"),
    ],
)
def test_bad_documents_name_the_offending_path(path: list[str | int], value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(_with(path, value))


def test_bad_json_text() -> None:
    with pytest.raises(ConfigError, match="JSON"):
        load_config("{limits:")
    with pytest.raises(ConfigError, match="object"):
        load_config("[]")


def test_client_ip_reads_only_cf_connecting_ip() -> None:
    headers = {"x-forwarded-for": "1.1.1.1", "x-real-ip": "2.2.2.2", "true-client-ip": "3.3.3.3"}
    assert client_ip(headers.get) is None
    headers["cf-connecting-ip"] = " 198.51.100.9 "
    assert client_ip(headers.get) == "198.51.100.9"
    assert client_ip({"cf-connecting-ip": "evil"}.get) is None
    assert client_ip({"cf-connecting-ip": "2001:DB8::0001"}.get) == "2001:db8::1"


def test_keys() -> None:
    cfg = parse_config(GOOD)
    ip, user = cfg.limit("per-ip"), cfg.limit("per-user")
    assert limit_key(ip, ip="198.51.100.9", subject=None, route=None) == "ip=198.51.100.9"
    # Every address of one IPv6 /64 shares a key.
    a = limit_key(ip, ip="2001:db8:1:2::1", subject=None, route=None)
    b = limit_key(ip, ip="2001:db8:1:2:ffff::9", subject=None, route=None)
    assert a == b == "ip=2001:db8:1:2::/64"
    assert ip_key("2001:db8:1:3::1") != ip_key("2001:db8:1:2::1")
    assert limit_key(ip, ip=None, subject="u", route="/api/") is None
    assert limit_key(user, ip="1.2.3.4", subject=None, route="/api/") is None
    assert limit_key(user, ip="1.2.3.4", subject="alice", route="/api/") == "sub=alice|route=/api/"
    long_key = limit_key(user, ip=None, subject="x" * 1000, route="/")
    assert long_key is not None and long_key.startswith("sha256=") and len(long_key) < 100


def test_object_names_per_key_or_shard() -> None:
    cfg = parse_config(GOOD)
    ip, user = cfg.limit("per-ip"), cfg.limit("per-user")
    assert object_name(ip, "ip=1.2.3.4") == "rl:per-ip:ip=1.2.3.4"
    shards = {object_name(user, f"sub=u{i}") for i in range(200)}
    assert shards == {f"rl:per-user:shard{i}" for i in range(4)}
    assert object_name(user, "sub=u1") == object_name(user, "sub=u1")
