"""A Worker of your own built from edge_kv's pieces (the routes; entry.py wires them).

* ``GET /api/orders/{id}``: an API key checked against KV (stored hashed), then the limits
  ``EDGE_KV_LIMITS`` assigns to ``/api/`` keyed on the verified subject and the client IP.
* ``POST /api/orders/{id}/pay``: the same, plus a Durable Object lock around the work; its
  fencing token goes to the origin so a paused holder's late write is refused there.

Unit-tested without the runtime in tests/edge/test_example_worker.py (in-memory bindings
from ``edge_kv.edge.testing``).
"""

from __future__ import annotations

from typing import Any

from edge_kv.edge import (
    EdgeLock,
    HttpError,
    RouteContext,
    Router,
    api_key_subject,
    enforce,
    json_response,
    refusal,
)

router = Router()


async def _authorised(rc: RouteContext) -> tuple[str, Any]:
    subject = await api_key_subject(rc.env, rc.request.headers)  # 401 problem if unknown
    if subject is None:
        raise HttpError(401, "an X-Api-Key header is required")
    verdict = await enforce(rc, subject=subject)
    return subject, verdict


@router.route("GET", "/api/orders/{order_id}")
async def get_order(rc: RouteContext) -> Any:
    subject, verdict = await _authorised(rc)
    if not verdict.allowed:
        return refusal(verdict)  # 429 + RateLimit-Policy / RateLimit / Retry-After
    return json_response({"order": rc.params["order_id"], "customer": subject}, headers=verdict.headers)


@router.route("POST", "/api/orders/{order_id}/pay")
async def pay_order(rc: RouteContext) -> Any:
    subject, verdict = await _authorised(rc)
    if not verdict.allowed:
        return refusal(verdict)
    async with EdgeLock(
        rc.env.LOCKS, f"order:{rc.params['order_id']}", ttl_ms=10_000, wait_ms=2_000
    ) as lease:
        # Forward to the origin with the fencing token; here we only report it.
        return json_response(
            {"order": rc.params["order_id"], "paid_by": subject, "fencing_token": lease.token}
        )
