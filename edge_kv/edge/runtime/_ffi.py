"""The conversions between Python and the JavaScript runtime, written once.

This module (with :mod:`edge_kv.edge.http` and the Durable Object shells) is the only
code that touches ``js``/``pyodide``/``workers``; it imports them lazily so that the rest
of the package, and its tests, run on CPython and on plain Pyodide too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edge_kv.core.errors import InvalidInput
from edge_kv.core.validate import MAX_SAFE_INTEGER, check_js_int

KV_MAX_KEY_BYTES = 512
KV_MIN_TTL_S = 60
# The KV binding takes expirationTtl as a signed 32-bit integer.
KV_MAX_TTL_S = 2**31 - 1


def to_py(value: Any) -> Any:
    """A JavaScript proxy as plain Python data (``dict``/``list``/``str``/numbers); other
    values unchanged."""
    convert = getattr(value, "to_py", None)
    if convert is None:
        return value
    return convert()


def js_object(value: Any) -> Any:
    """A Python ``dict`` (nested) as a JavaScript object (what Web APIs expect as options),
    unchanged where the runtime is not JavaScript (CPython doubles take the dict)."""
    try:
        from js import Object
        from pyodide.ffi import to_js
    except ImportError:
        return value
    return to_js(value, dict_converter=Object.fromEntries)


def request_cf(request: Any) -> dict[str, Any]:
    """``request.cf`` as a ``dict`` (empty when the runtime gives none)."""
    cf = getattr(request, "cf", None)
    if cf is None:
        return {}
    data = to_py(cf)
    return dict(data) if isinstance(data, dict) else {}


def request_method(request: Any) -> str:
    """The request method, upper case."""
    raw = getattr(request, "js_object", None)
    method = getattr(raw, "method", None) if raw is not None else None
    if method is None:
        method = getattr(request, "method", "GET")
    return str(method).upper()


def check_js_args(args: Iterable[Any], what: str = "argument") -> None:
    """Refuse integers JavaScript cannot represent exactly before they cross the FFI (they
    would become BigInts, which the runtime's number parameters reject)."""
    for i, arg in enumerate(args):
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_SAFE_INTEGER:
            check_js_int(f"{what} {i + 1}", arg)


def check_kv_key(key: object) -> str:
    """A key Workers KV accepts: a non-empty string of at most 512 UTF-8 bytes, not ``.``
    or ``..``; :class:`InvalidInput` otherwise (before any KV call)."""
    if not isinstance(key, str) or not key:
        raise InvalidInput("KV key must be a non-empty string")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput("KV key must be valid Unicode text (it contains a lone surrogate)") from None
    if size > KV_MAX_KEY_BYTES:
        raise InvalidInput(f"KV key is {size} bytes; Workers KV allows at most {KV_MAX_KEY_BYTES}")
    if key in (".", ".."):
        raise InvalidInput(f"KV key {key!r} is not allowed")
    return key


def check_kv_ttl(ttl: object) -> int:
    """An ``expirationTtl`` KV accepts: whole seconds in [60, 100 years]."""
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not KV_MIN_TTL_S <= ttl <= KV_MAX_TTL_S:
        raise InvalidInput(f"KV ttl must be an integer number of seconds in [{KV_MIN_TTL_S}, {KV_MAX_TTL_S}]")
    return ttl


async def kv_get(kv: Any, key: str) -> str | None:
    """The text stored at ``key`` (``None`` when absent); the key is checked first."""
    value = await kv.get(check_kv_key(key))
    return value if isinstance(value, str) else None


async def kv_put(kv: Any, key: str, value: str, *, ttl_s: int | None = None) -> None:
    """Store text at ``key``, expiring after ``ttl_s`` seconds when given (checked first)."""
    check_kv_key(key)
    if ttl_s is None:
        await kv.put(key, value)
    else:
        # A plain dict: the SDK's binding wrapper converts it to the options object.
        await kv.put(key, value, {"expirationTtl": check_kv_ttl(ttl_s)})


async def kv_delete(kv: Any, key: str) -> None:
    await kv.delete(check_kv_key(key))


async def open_cache(name: str | None = None) -> Any:
    """``caches.default``, or the named cache (``await caches.open(name)``)."""
    from js import caches

    return await caches.open(name) if name else caches.default


def js_response(response: Any) -> Any:
    """The JavaScript ``Response`` behind an SDK ``Response`` (what the Cache API stores)."""
    return getattr(response, "js_object", response)


def error_line(exc: BaseException) -> str:
    """The last non-empty line of an error that crossed from JavaScript (its message without
    the ``Error:`` prefix or a Python traceback), at most 300 characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__).removeprefix("Error: ")[:300]
