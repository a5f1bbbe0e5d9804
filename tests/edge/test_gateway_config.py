"""The gateway document: every fault names its JSON path; a good document parses; the
pipeline's pure parts (header rules, Server-Timing) behave (CPython and Pyodide)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from edge_kv.edge.gateway import GatewayConfigError, ServerTiming, load_gateway_config, parse_gateway_config
from edge_kv.edge.gateway.headers import forwardable_request_headers, forwardable_response_headers

GOOD: dict[str, Any] = {
    "routes": [
        {
            "name": "api",
            "prefix": "/api/",
            "auth": ["jwt:main", "api_key"],
            "scopes": ["orders:read"],
            "limits": ["per-subject"],
            "routing": "global",
            "methods": ["GET", "POST"],
        },
        {"prefix": "/public/", "auth": "none", "routing": "global"},
    ],
    "issuers": {
        "main": {"issuer": "https://id.test", "audience": "orders", "jwks_uri": "https://id.test/jwks"}
    },
    "routing": {
        "global": {
            "pools": {
                "eu": {"strategy": "ordered", "origins": [{"name": "eu-1", "url": "https://eu.example"}]}
            },
            "default": {"pools": ["eu"]},
        }
    },
    "limits": {
        "limits": {
            "per-subject": {
                "key": ["subject"],
                "tiers": [{"name": "m", "kind": "fixed_window", "limit": 5, "window_s": 60}],
            }
        }
    },
}


def broken(path: list[Any], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(GOOD)
    target = doc
    for part in path[:-1]:
        target = target[part]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


def test_a_good_document_parses_and_matches_routes() -> None:
    config = parse_gateway_config(GOOD)
    api = config.match("POST", "/api/orders")
    assert api is not None and api.name == "api" and api.scopes == ("orders:read",)
    assert config.match("DELETE", "/api/orders") is None  # method not listed
    assert config.match("HEAD", "/public/x") is not None and config.match("GET", "/apix") is None
    assert load_gateway_config(json.dumps(GOOD)).routes[1].public
    anything = parse_gateway_config({**GOOD, "routes": [{**GOOD["routes"][1], "methods": ["*"]}]})
    assert anything.match("PROPFIND", "/public/x") is not None


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (["routes", 0, "auth"], ["jwt:x"], "routes[0].auth[0]: unknown issuer 'x'"),
        (["routes", 0, "auth"], "jwt:x", "routes[0].auth: unknown issuer 'x'"),
        (["routes", 1, "routing"], "nowhere", "routes[1].routing: unknown routing 'nowhere'"),
        (["routes", 0, "limits"], ["per-nothing"], "routes[0].limits[0]: unknown limit 'per-nothing'"),
        (["routes", 0, "methods"], ["GET", "BR EW"], "routes[0].methods[1]"),
        (["routes", 0, "prefix"], "api", "routes[0].prefix"),
        (["routes", 1, "scopes"], ["a"], "routes[1].scopes: a public route"),
        (["routes", 0, "timeout_ms"], 0, "routes[0].timeout_ms"),
        (["routes", 0, "colour"], "red", "routes[0]: unknown field(s) ['colour']"),
        (
            ["routing", "global", "pools", "eu", "origins", 0, "url"],
            "ftp://x",
            "routing.global.pools.eu.origins[0].url",
        ),
        (["issuers", "main", "jwks_uri"], KeyError, "issuers.main: needs exactly one of"),
        (["limits", "limits", "per-subject", "tiers"], [], "limits.limits.per-subject.tiers"),
        (["health"], {"cooldown_s": 0}, "health.cooldown_s"),
        (["routes"], [], "routes: expected a non-empty list"),
    ],
)
def test_faults_name_their_json_path(path: list[Any], value: Any, where: str) -> None:
    with pytest.raises(GatewayConfigError) as caught:
        parse_gateway_config(broken(path, value))
    assert str(caught.value).startswith(where), str(caught.value)
    assert caught.value.status == 400


def test_not_json_is_a_clear_error() -> None:
    with pytest.raises(GatewayConfigError, match="not valid JSON"):
        load_gateway_config("{routes")


def test_client_identity_and_hop_by_hop_fields_never_pass() -> None:
    incoming = [
        ("accept", "application/json"),
        ("connection", "keep-alive, x-private"),
        ("x-private", "hop"),
        ("keep-alive", "timeout=5"),
        ("x-edge-subject", "admin"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("cf-connecting-ip", "1.2.3.4"),
        ("signature-input", "sig1=()"),
        ("forwarded", "for=1.2.3.4"),
        ("host", "edge.example"),
        ("authorization", "Bearer t"),
    ]
    assert forwardable_request_headers(incoming) == [
        ("accept", "application/json"),
        ("authorization", "Bearer t"),
    ]
    outgoing = [("content-type", "text/plain"), ("transfer-encoding", "chunked"), ("content-length", "3")]
    assert forwardable_response_headers(outgoing) == [("content-type", "text/plain")]


def test_server_timing_lists_each_stage() -> None:
    ticks = iter([0.0, 0.001, 0.0035])
    timing = ServerTiming(clock=lambda: next(ticks))
    timing.lap("auth")
    timing.lap("origin")
    assert timing.header() == "auth;dur=1.0, origin;dur=2.5"
