"""An :class:`~edge_kv.edge.outbox.outbox.EdgeOutbox` configured from a Worker's vars.

| var | default | meaning |
| --- | --- | --- |
| ``EDGE_KV_OUTBOX_URL`` | (required) | the origin endpoint every entry is POSTed to |
| ``EDGE_KV_SIGNING_KEYS`` | (required to deliver) | the gateway's signing keys (secret) |
| ``EDGE_KV_OUTBOX_MAX_ATTEMPTS`` | 10 | attempts before an entry is dead-lettered |
| ``EDGE_KV_OUTBOX_BACKOFF_BASE_MS`` | 1000 | full-jitter backoff base |
| ``EDGE_KV_OUTBOX_BACKOFF_CAP_MS`` | 300000 | longest wait between attempts |
| ``EDGE_KV_OUTBOX_TIMEOUT_MS`` | 10000 | how long one attempt waits for the origin's answer |
"""

from __future__ import annotations

from typing import Any

from edge_kv.core.backoff import FullJitter
from edge_kv.core.errors import InvalidInput
from edge_kv.core.outbox import DeliveryPolicy
from edge_kv.edge.env import env_int, env_str
from edge_kv.edge.outbox.outbox import EdgeOutbox
from edge_kv.edge.outbox.signing import signer_from_env

__all__ = ["OUTBOX_URL_VAR", "outbox_from_env"]

OUTBOX_URL_VAR = "EDGE_KV_OUTBOX_URL"


def outbox_from_env(ctx: Any, env: Any, *, source: str | None = None) -> EdgeOutbox:
    """The outbox of the Durable Object ``ctx`` as the vars above configure it;
    :class:`InvalidInput` when ``EDGE_KV_OUTBOX_URL`` is missing or a number is bad."""
    url = env_str(env, OUTBOX_URL_VAR)
    if url is None:
        raise InvalidInput(f"the outbox needs {OUTBOX_URL_VAR} (the origin endpoint)")
    base_ms = env_int(env, "EDGE_KV_OUTBOX_BACKOFF_BASE_MS", 1000, 1, 3_600_000)
    cap_ms = env_int(env, "EDGE_KV_OUTBOX_BACKOFF_CAP_MS", 300_000, 1, 86_400_000)
    policy = DeliveryPolicy(
        max_attempts=env_int(env, "EDGE_KV_OUTBOX_MAX_ATTEMPTS", 10, 1, 10_000),
        backoff=FullJitter(base=base_ms / 1000, cap=cap_ms / 1000),
        min_delay_ms=min(100, base_ms),
    )
    return EdgeOutbox(
        ctx,
        env,
        endpoint=url,
        signer=lambda: signer_from_env(env),
        policy=policy,
        source=source,
        timeout_ms=env_int(env, "EDGE_KV_OUTBOX_TIMEOUT_MS", 10_000, 1, 300_000),
    )
