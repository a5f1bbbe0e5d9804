"""The edge gateway: authenticate, authorise, limit, choose an origin by geography and
health, sign (RFC 9421) and forward. See :mod:`edge_kv.edge.gateway.pipeline` and
docs/gateway.md."""

from edge_kv.edge.gateway.config import (
    GatewayConfig,
    GatewayConfigError,
    RouteConfig,
    load_gateway_config,
    parse_gateway_config,
)
from edge_kv.edge.gateway.health import HealthBoard
from edge_kv.edge.gateway.pipeline import GATEWAY_VARS, SIGNING_KEYS_VAR, Gateway, Identity, ServerTiming

__all__ = [
    "GATEWAY_VARS",
    "SIGNING_KEYS_VAR",
    "Gateway",
    "GatewayConfig",
    "GatewayConfigError",
    "HealthBoard",
    "Identity",
    "RouteConfig",
    "ServerTiming",
    "load_gateway_config",
    "parse_gateway_config",
]
