"""The lock service over HTTP, for origins without Redis (service token required).

* ``POST /locks/{resource}/acquire`` ``{"ttl_ms": int, "wait_ms": int = 0, "owner": str?,
  "poll_ms": int = 25}`` -> 200 ``{"resource", "owner", "token", "expires_at_ms", "ttl_ms"}``;
  409 when not granted in time.
* ``POST /locks/{resource}/extend`` ``{"owner": str, "ttl_ms": int}`` -> 200 / 409.
* ``POST /locks/{resource}/release`` ``{"owner": str}`` -> 200 / 409 (wrong or expired owner).
* ``GET /locks/{resource}`` -> public status (never the owner token).

Bounds come from :func:`edge_kv.edge.locks.settings.lock_limits`. Worker code uses
:class:`edge_kv.edge.locks.EdgeLock` directly.
"""

from __future__ import annotations

from typing import Any

from edge_kv.core.errors import LockNotOwned
from edge_kv.edge.auth import require_service_token
from edge_kv.edge.http import HttpError, RouteContext, Router, json_response, read_json_object
from edge_kv.edge.locks.client import DEFAULT_POLL_MS, EdgeLock, LockBusy, check_resource, new_owner
from edge_kv.edge.locks.client import object_name as lock_object_name
from edge_kv.edge.locks.settings import lock_limits
from edge_kv.edge.locks.state import LockLimits, check_owner
from edge_kv.edge.runtime import call_rpc

__all__ = ["register"]


def _service(rc: RouteContext) -> LockLimits:
    require_service_token(rc.env, rc.request.headers.get("authorization"))
    try:
        return lock_limits(rc.env)
    except ValueError as exc:
        raise HttpError(500, f"lock configuration is invalid: {exc}") from None


def _resource(rc: RouteContext) -> str:
    try:
        return check_resource(rc.params["resource"])
    except ValueError as exc:
        raise HttpError(400, f"resource: {exc}") from None


async def _body(rc: RouteContext, allowed: set[str]) -> dict[str, Any]:
    body = await read_json_object(rc.request)
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise HttpError(400, f"unknown field(s) {unknown}")
    return body


def _checked(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None


def register(router: Router) -> None:
    """Add the lock routes to ``router`` (the namespace is bound as ``LOCKS``)."""

    @router.route("POST", "/locks/{resource}/acquire")
    async def lock_acquire(rc: RouteContext) -> Any:
        limits = _service(rc)
        resource = _resource(rc)
        body = await _body(rc, {"ttl_ms", "wait_ms", "owner", "poll_ms"})
        ttl = _checked(limits.check_ttl, body.get("ttl_ms"))
        wait = _checked(limits.check_wait, body.get("wait_ms", 0))
        owner = _checked(check_owner, body["owner"]) if "owner" in body else new_owner()
        poll = body.get("poll_ms", DEFAULT_POLL_MS)
        if isinstance(poll, bool) or not isinstance(poll, int) or not 5 <= poll <= 1000:
            raise HttpError(400, f"poll_ms must be an integer in [5, 1000], got {str(poll)[:40]}")
        lock = EdgeLock(rc.env.LOCKS, resource, ttl_ms=ttl, wait_ms=wait, owner=owner, poll_ms=poll)
        try:
            lease = await lock.acquire()
        except LockBusy as busy:
            raise HttpError(
                409,
                f"lock {resource!r} is held; not acquired ({busy.reason})",
                resource=resource,
                reason=busy.reason,
                holder_expires_at_ms=busy.holder_expires_at_ms,
            ) from None
        return json_response(
            {
                "resource": resource,
                "owner": lease.owner,
                "token": lease.token,
                "expires_at_ms": lease.expires_at_ms,
                "ttl_ms": ttl,
            }
        )

    @router.route("POST", "/locks/{resource}/extend")
    async def lock_extend(rc: RouteContext) -> Any:
        limits = _service(rc)
        resource = _resource(rc)
        body = await _body(rc, {"ttl_ms", "owner"})
        ttl = _checked(limits.check_ttl, body.get("ttl_ms"))
        owner = _checked(check_owner, body.get("owner"))
        try:
            lease = await EdgeLock(rc.env.LOCKS, resource, ttl_ms=ttl, owner=owner).extend()
        except LockNotOwned as exc:
            raise HttpError(409, str(exc), resource=resource) from None
        return json_response(
            {"resource": resource, "owner": owner, "token": lease.token, "expires_at_ms": lease.expires_at_ms}
        )

    @router.route("POST", "/locks/{resource}/release")
    async def lock_release(rc: RouteContext) -> Any:
        _service(rc)
        resource = _resource(rc)
        body = await _body(rc, {"owner"})
        owner = _checked(check_owner, body.get("owner"))
        try:
            await EdgeLock(rc.env.LOCKS, resource, owner=owner).release()
        except LockNotOwned as exc:
            raise HttpError(409, str(exc), resource=resource) from None
        return json_response({"resource": resource, "released": True})

    @router.route("GET", "/locks/{resource}")
    async def lock_status(rc: RouteContext) -> Any:
        _service(rc)
        resource = _resource(rc)
        ns = rc.env.LOCKS
        status = await call_rpc(ns.get(ns.idFromName(lock_object_name(resource))), "status")
        return json_response({"resource": resource, **status})
