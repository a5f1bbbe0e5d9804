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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from workers import Response

from edge_kv.core.problem import CONTENT_TYPE, problem_json

MAX_JSON_BYTES = 1 << 20


class HttpError(Exception):
    """Raised by a handler to answer with ``status`` and a problem body saying ``detail``."""

    def __init__(self, status: int, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extensions = extensions


def bad_request(detail: str) -> HttpError:
    return HttpError(400, detail)


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    headers: Iterable[tuple[str, str]] = (),
    **extensions: Any,
) -> Response:
    """A ``Response`` with an RFC 9457 body and ``application/problem+json``."""
    all_headers = [("content-type", CONTENT_TYPE), *headers]
    return Response(problem_json(status, detail, **extensions), status=status, headers=all_headers)


def json_response(data: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """A JSON ``Response`` (compact encoding, ``application/json``)."""
    all_headers = [("content-type", "application/json"), *headers]
    return Response(json.dumps(data, separators=(",", ":")), status=status, headers=all_headers)


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
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise bad_request(f"malformed JSON body: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


async def read_json_object(request: Any) -> dict[str, Any]:
    """Like ``read_json`` but the body must be a JSON object."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise bad_request(f"expected a JSON object body, got {type(body).__name__}")
    return body


Handler = Callable[["RouteContext"], Awaitable[Response]]


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

    def route(self, methods: str | Iterable[str], path: str) -> Callable[[Handler], Handler]:
        """Decorator registering ``handler`` for ``methods`` (e.g. ``"GET"`` or ``["PUT", "POST"]``)."""
        wanted = frozenset([methods] if isinstance(methods, str) else methods)

        def register(handler: Handler) -> Handler:
            self._routes.append(_Route(frozenset(m.upper() for m in wanted), _compile(path), handler))
            return handler

        return register

    async def dispatch(self, request: Any, env: Any, ctx: Any) -> Response:
        """Answer ``request``; never raises."""
        parts = urlsplit(str(request.url))
        method = str(request.js_object.method).upper()
        allowed: set[str] = set()
        try:
            for route in self._routes:
                match = route.pattern.match(parts.path)
                if match is None:
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
        except Exception:
            print(f"Unhandled exception in {method} {parts.path}:\n{traceback.format_exc()}")
            return problem_response(500, "The Worker failed to handle the request.")


def rpc_error_status(exc: BaseException) -> int:
    """400 when a Durable Object rejected the call's arguments (ValueError/TypeError), else 502."""
    text = str(exc)
    for marker in ("ValueError", "TypeError"):
        if marker in text:
            return 400
    return 502


def rpc_error_detail(exc: BaseException) -> str:
    """The one-line message of an exception that crossed the RPC boundary."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    line = lines[-1] if lines else type(exc).__name__
    return line.removeprefix("Error: ")
