"""Rate limits at the edge: exact in Durable Objects, approximate in KV, tiered, with an
in-isolate block cache and the IETF ``RateLimit`` headers.

Most Workers need :func:`enforce` and :func:`refusal`; the Durable Object class is
:class:`edge_kv.edge.objects.RateLimiter`. See docs/edge-limits-locks.md.
"""

from edge_kv.edge.ratelimit.backends import DurableObjectBackend, KvBackend
from edge_kv.edge.ratelimit.blockcache import BlockCache
from edge_kv.edge.ratelimit.config import ConfigError, LimitsConfig, LimitSpec, load_config, parse_config
from edge_kv.edge.ratelimit.durable import ExplicitClockRefused, RateLimiterRpc, RateLimitObject
from edge_kv.edge.ratelimit.enforce import (
    BLOCK_CACHE,
    LIMITS_CONFIG,
    build_limiter,
    enforce,
    limits_config,
    refusal,
    verdict_details,
    verdict_headers,
)
from edge_kv.edge.ratelimit.keys import client_ip
from edge_kv.edge.ratelimit.limiter import BackendError, EdgeLimiter, LimitVerdict
from edge_kv.edge.ratelimit.service_api import register as register_service_api

__all__ = [
    "BLOCK_CACHE",
    "LIMITS_CONFIG",
    "BackendError",
    "BlockCache",
    "ConfigError",
    "DurableObjectBackend",
    "EdgeLimiter",
    "ExplicitClockRefused",
    "KvBackend",
    "LimitSpec",
    "LimitVerdict",
    "LimitsConfig",
    "RateLimitObject",
    "RateLimiterRpc",
    "build_limiter",
    "client_ip",
    "enforce",
    "limits_config",
    "load_config",
    "parse_config",
    "refusal",
    "register_service_api",
    "verdict_details",
    "verdict_headers",
]
