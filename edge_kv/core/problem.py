"""RFC 9457 problem details: the body of every error response, edge or origin."""

from __future__ import annotations

import json
from typing import Any

CONTENT_TYPE = "application/problem+json"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def problem(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    type: str = "about:blank",
    instance: str | None = None,
    **extensions: Any,
) -> dict[str, Any]:
    """Build a problem object.

    Every standard member is a named parameter, so an extension can never shadow one
    (a second ``status``/``detail`` is a ``TypeError`` from the call itself).

    ``status`` must be an HTTP status code (an ``int`` in 100..599): RFC 9457 makes the
    member a JSON number equal to the response status, so anything else is refused.
    """
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"status must be an HTTP status code (int 100..599), got {status!r}")
    body: dict[str, Any] = {
        "type": type,
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
    }
    if detail is not None:
        body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    body.update(extensions)
    return body


def problem_json(status: int, detail: str | None = None, **kwargs: Any) -> str:
    """The problem object serialised compactly, ready for a response body."""
    return json.dumps(problem(status, detail, **kwargs), separators=(",", ":"), sort_keys=False)
