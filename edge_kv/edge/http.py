"""HTTP plumbing for the Worker: a small route table, JSON bodies, RFC 9457 problem responses.

What it promises: every request gets an answer. A route handler raising ``HttpError``
becomes that status with a problem body; a body that is not the JSON it should be is a 400;
an unknown path is a 404, a known path with the wrong method a 405; any other exception is a
500 whose body says nothing about the code (the traceback goes to the Worker's log).
Later features register routes with ``router.route(...)`` and need nothing else.
"""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from edge_kv.core.errors import EdgeKvError
from edge_kv.core.problem import CONTENT_TYPE, problem_json
from edge_kv.edge.runtime import request_method

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "Handler",
    "HttpError",
    "PlainHeaders",
    "PlainResponse",
    "RouteContext",
    "Router",
    "bad_request",
    "json_response",
    "problem_response",
    "read_json",
    "read_json_object",
    "text_response",
]

MAX_JSON_BYTES = 1 << 20
MAX_JSON_DEPTH = 64


class HttpError(EdgeKvError):
    """Raised by a handler to answer with ``status`` and a problem body saying ``detail``.

    Any other :class:`~edge_kv.core.errors.EdgeKvError` reaching the router is answered
    the same way with its class's status hint.
    """

    code = "http_error"

    def __init__(self, status: int, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.status = status  # type: ignore[misc]  # per-instance status
        self.extensions = extensions


class PlainHeaders:
    """Case-insensitive header list with ``get`` (the part of ``Headers`` tests use)."""

    __test__ = False  # not a pytest test class when imported as TestHeaders

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items = [(k.lower(), v) for k, v in pairs]

    def get(self, name: str, default: str | None = None) -> str | None:
        values = [v for k, v in self._items if k == name.lower()]
        return ", ".join(values) if values else default

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)


class PlainResponse:
    """What the helpers below build off the runtime (unit tests on CPython or plain
    Pyodide): body text, status, headers."""

    __test__ = False

    def __init__(self, body: str = "", status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.body = body
        self.status = status
        self.headers = PlainHeaders(headers)

    def json(self) -> Any:
        return json.loads(self.body)


def _response_class() -> Any:
    """The runtime's ``Response`` (``workers.Response``), else :class:`PlainResponse`."""
    try:
        from workers import Response
    except ImportError:
        return PlainResponse
    return Response


def bad_request(detail: str) -> HttpError:
    return HttpError(400, detail)


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    headers: Iterable[tuple[str, str]] = (),
    **extensions: Any,
) -> Any:
    """A ``Response`` with an RFC 9457 body and ``application/problem+json``."""
    all_headers = [("content-type", CONTENT_TYPE), *headers]
    return _response_class()(problem_json(status, detail, **extensions), status=status, headers=all_headers)


def text_response(body: str, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> Any:
    """A plain ``Response`` with ``body`` (give the content type in ``headers``)."""
    return _response_class()(body, status=status, headers=list(headers))


def json_response(data: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> Any:
    """A JSON ``Response`` (compact encoding, ``application/json``)."""
    all_headers = [("content-type", "application/json"), *headers]
    return _response_class()(json.dumps(data, separators=(",", ":")), status=status, headers=all_headers)


async def read_json(request: Any, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The request body parsed as JSON; ``HttpError(400/413/415)`` if it is not usable JSON."""
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        raise HttpError(415, f"expected an application/json body, got {content_type}")
    raw = await request.text()
    if len(raw.encode()) > max_bytes:
        raise HttpError(413, f"JSON body larger than {max_bytes} bytes")
    if not raw.strip():
        raise bad_request("request body is empty; expected JSON")
    # Checked on the text first: a deeply nested document overflows the interpreter's stack
    # inside json.loads, which on Pyodide is a fatal error rather than a RecursionError.
    if _text_depth(raw) > MAX_JSON_DEPTH:
        raise bad_request(f"JSON body nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise bad_request(f"malformed JSON body: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError:
        # int() refuses more than sys.get_int_max_str_digits() digits (4300 by default).
        raise bad_request("malformed JSON body: a number has too many digits") from None
    except RecursionError:
        raise bad_request(f"JSON body nested deeper than {MAX_JSON_DEPTH} levels") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise bad_request(f"JSON body nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _text_depth(text: str) -> int:
    """The deepest ``[``/``{`` nesting of JSON text, ignoring brackets inside strings."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0  # cannot be deeper than the limit: skip the character walk
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                return depth
            stack.extend((child, depth + 1) for child in item)
    return deepest


async def read_json_object(request: Any) -> dict[str, Any]:
    """Like ``read_json`` but the body must be a JSON object."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise bad_request(f"expected a JSON object body, got {type(body).__name__}")
    return body


Handler = Callable[["RouteContext"], Awaitable[Any]]
EnvPredicate = Callable[[Any], bool]


@dataclass
class RouteContext:
    """What a handler gets: the request, the Worker's env and ctx, and the path parameters."""

    request: Any
    env: Any
    ctx: Any
    params: dict[str, str] = field(default_factory=dict)
    path: str = "/"
    query: str = ""


_PARAM = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)\}")


@dataclass
class _Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    handler: Handler
    when: EnvPredicate | None = None


def _compile(path: str) -> re.Pattern[str]:
    if not path.startswith("/"):
        raise ValueError(f"route path must start with '/': {path!r}")
    out, pos = [], 0
    for m in _PARAM.finditer(path):
        out.append(re.escape(path[pos : m.start()]))
        out.append(f"(?P<{m.group(1)}>[^/]+)")
        pos = m.end()
    out.append(re.escape(path[pos:]))
    return re.compile("^" + "".join(out) + "$")


def _decode(segment: str) -> str:
    from urllib.parse import unquote

    return unquote(segment)


class Router:
    """Method + path pattern (``/kv/{key}``) -> async handler, first match wins."""

    def __init__(self) -> None:
        self._routes: list[_Route] = []

    def route(
        self, methods: str | Iterable[str], path: str, *, when: EnvPredicate | None = None
    ) -> Callable[[Handler], Handler]:
        """Decorator registering ``handler`` for ``methods`` (e.g. ``"GET"`` or ``["PUT", "POST"]``).

        ``when(env)``, if given, must be true for the route to exist at all (a route that
        only a test configuration enables is a 404 everywhere else).
        """
        wanted = frozenset([methods] if isinstance(methods, str) else methods)

        def register(handler: Handler) -> Handler:
            self._routes.append(_Route(frozenset(m.upper() for m in wanted), _compile(path), handler, when))
            return handler

        return register

    async def dispatch(self, request: Any, env: Any, ctx: Any) -> Any:
        """Answer ``request``; never raises."""
        parts = urlsplit(str(request.url))
        method = request_method(request)
        allowed: set[str] = set()
        try:
            for route in self._routes:
                match = route.pattern.match(parts.path)
                if match is None or (route.when is not None and not route.when(env)):
                    continue
                if method not in route.methods and not (method == "HEAD" and "GET" in route.methods):
                    allowed |= route.methods
                    continue
                params = {k: _decode(v) for k, v in match.groupdict().items()}
                rc = RouteContext(request, env, ctx, params, parts.path, parts.query)
                return await route.handler(rc)
            if allowed:
                return problem_response(
                    405,
                    f"{method} is not allowed on {parts.path}",
                    headers=[("allow", ", ".join(sorted(allowed)))],
                )
            return problem_response(404, f"no route for {parts.path}")
        except HttpError as exc:
            return problem_response(exc.status, exc.detail, **exc.extensions)
        except EdgeKvError as exc:
            return problem_response(exc.status, exc.detail or None, **_extensions(exc))
        except Exception:
            print(f"Unhandled exception in {method} {parts.path}:\n{traceback.format_exc()}")
            return problem_response(500, "The Worker failed to handle the request.")


def _extensions(exc: EdgeKvError) -> dict[str, Any]:
    extensions: dict[str, Any] = {"code": exc.code}
    extensions.update(getattr(exc, "extensions", {}) or {})
    return extensions
