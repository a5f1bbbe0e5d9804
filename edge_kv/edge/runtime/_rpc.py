"""Errors across the Durable Object RPC boundary, mapped by type.

A Python exception raised inside a Durable Object reaches the caller as a JavaScript
error whose only content is text, so its type is lost. Durable Object shells therefore
decorate their RPC methods with :func:`rpc_method`: the method's value travels as
``{"ok": value}`` and an :class:`~edge_kv.core.errors.EdgeKvError` as
``{"error": {"code", "status", "detail"}}`` (one JSON string either way). The caller's
:func:`call_rpc` rebuilds the same error type from its ``code``; anything else that goes
wrong (the object crashed, the call could not be delivered, a reply that is not an
envelope) is :class:`~edge_kv.core.errors.UpstreamFailed` (502).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from edge_kv.core.errors import EdgeKvError, UpstreamFailed, error_from_code
from edge_kv.edge.runtime._ffi import check_js_args, error_line

P = ParamSpec("P")
T = TypeVar("T")


def encode_ok(value: Any) -> str:
    return json.dumps({"ok": value}, separators=(",", ":"))


def encode_error(error: EdgeKvError) -> str:
    return json.dumps({"error": error.to_json()}, separators=(",", ":"))


def rpc_method(fn: Callable[P, Awaitable[Any]]) -> Callable[P, Awaitable[str]]:
    """Decorate a Durable Object RPC method: its result (JSON-serialisable) or its
    :class:`EdgeKvError` becomes one JSON envelope string. Other exceptions propagate
    (a bug, reported to the caller as 502 and logged by the runtime)."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> str:
        try:
            value = await fn(*args, **kwargs)
        except EdgeKvError as exc:
            return encode_error(exc)
        return encode_ok(value)

    return wrapper


def decode_reply(raw: Any) -> Any:
    """The value of an envelope, or raise the error it carries (same type as raised)."""
    if not isinstance(raw, str):
        raise UpstreamFailed(f"the Durable Object answered {type(raw).__name__}, not an RPC envelope")
    try:
        body = json.loads(raw)
    except ValueError:
        raise UpstreamFailed("the Durable Object answered malformed JSON") from None
    if isinstance(body, dict) and "ok" in body:
        return body["ok"]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        raise error_from_code(
            str(err.get("code", "")), str(err.get("detail", "")), _status(err.get("status"))
        )
    raise UpstreamFailed("the Durable Object answered something that is not an RPC envelope")


def _status(value: Any) -> int | None:
    return value if isinstance(value, int) and 400 <= value <= 599 else None


async def call_rpc(stub: Any, method: str, *args: Any) -> Any:
    """Call ``stub.<method>(*args)`` on a Durable Object whose method is an
    :func:`rpc_method`, and return its value or raise its error by type.

    Integers JavaScript cannot hold exactly are refused (``InvalidInput``) before the call.
    """
    check_js_args(args, what=f"{method} argument")
    try:
        raw = await getattr(stub, method)(*args)
    except EdgeKvError:
        raise
    except Exception as exc:
        raise UpstreamFailed(f"Durable Object call {method}() failed: {error_line(exc)}") from exc
    return decode_reply(raw)
