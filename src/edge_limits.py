"""The reference Worker's demo resources behind the configured limits.

``GET /limited/{name}`` and ``GET /limited-kv/{name}``: the limits ``EDGE_KV_LIMITS``
assigns to the path (a Durable Object limit and a KV limit in ``wrangler.toml``), keyed
by ``CF-Connecting-IP``, the subject of a verified ``X-Api-Key`` and the route.
"""

from __future__ import annotations

from typing import Any

from edge_kv.edge import RouteContext, Router, api_key_subject, enforce, json_response, refusal
from edge_kv.edge.ratelimit import verdict_headers


def register(router: Router) -> None:
    @router.route("GET", "/limited/{name}")
    @router.route("GET", "/limited-kv/{name}")
    async def limited_resource(rc: RouteContext) -> Any:
        verdict = await enforce(rc, subject=await api_key_subject(rc.env, rc.request.headers))
        if not verdict.allowed:
            return refusal(verdict)
        body = {"ok": True, "resource": rc.params["name"], "limited_by": verdict.source}
        return json_response(body, headers=verdict_headers(verdict))
