"""RFC 9457 problem details: the error body at the edge and at the origin."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_kv.core.problem import CONTENT_TYPE, problem, problem_json


def test_content_type() -> None:
    assert CONTENT_TYPE == "application/problem+json"


def test_minimal_problem_has_type_title_status_only() -> None:
    assert problem(404) == {"type": "about:blank", "title": "Not Found", "status": 404}


@pytest.mark.parametrize(
    ("status", "title"),
    [
        (400, "Bad Request"),
        (401, "Unauthorized"),
        (409, "Conflict"),
        (413, "Content Too Large"),
        (422, "Unprocessable Content"),
        (429, "Too Many Requests"),
        (503, "Service Unavailable"),
    ],
)
def test_titles_follow_rfc_9110_reason_phrases(status: int, title: str) -> None:
    assert problem(status)["title"] == title


def test_unknown_status_gets_generic_title() -> None:
    assert problem(418)["title"] == "Error"


def test_all_standard_members_and_extensions() -> None:
    body = problem(
        429,
        "10 requests per second",
        title="Slow down",
        type="https://example.com/probs/rate",
        instance="/orders/1",
        retry_after=3,
        policy="per-second",
    )
    assert body == {
        "type": "https://example.com/probs/rate",
        "title": "Slow down",
        "status": 429,
        "detail": "10 requests per second",
        "instance": "/orders/1",
        "retry_after": 3,
        "policy": "per-second",
    }
    assert list(body)[:3] == ["type", "title", "status"]


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate members: {keys}"
    return dict(pairs)


def test_standard_members_are_never_shadowed_by_extensions() -> None:
    """Each standard member is a named parameter: passing it by keyword sets it, once."""
    body = problem(400, **{"type": "https://e.x/p", "title": "T", "instance": "/i", "detail": "d"})
    assert body == {"type": "https://e.x/p", "title": "T", "status": 400, "detail": "d", "instance": "/i"}
    text = problem_json(400, "d", **{"type": "https://e.x/p", "title": "T", "instance": "/i"})
    assert json.loads(text, object_pairs_hook=_no_duplicate_keys) == body


@pytest.mark.parametrize(
    "call",
    [
        # A second status is the wrong type on purpose: the call must be refused.
        lambda: problem(400, **{"status": 500}),  # type: ignore[arg-type]
        lambda: problem(400, "d", **{"detail": "again"}),
        lambda: problem_json(400, **{"status": 500}),  # type: ignore[arg-type]
        lambda: problem_json(400, "d", **{"detail": "again"}),
    ],
    ids=["problem-status", "problem-detail", "json-status", "json-detail"],
)
def test_a_second_status_or_detail_is_refused(call: Any) -> None:
    with pytest.raises(TypeError):
        call()


@pytest.mark.parametrize("status", [0, 99, 600, -400, True, 400.0, "400", None])
def test_status_must_be_an_http_status_code(status: object) -> None:
    with pytest.raises(ValueError, match="status"):
        problem(status)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="status"):
        problem_json(status)  # type: ignore[arg-type]


def test_problem_json_is_compact_and_round_trips() -> None:
    text = problem_json(400, "key is 600 bytes; the maximum is 512", field="key")
    assert '": ' not in text and '", ' not in text  # compact separators
    assert text.startswith('{"type":"about:blank","title":"Bad Request","status":400')
    assert json.loads(text) == {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": "key is 600 bytes; the maximum is 512",
        "field": "key",
    }


def test_unserialisable_extension_is_refused() -> None:
    with pytest.raises(TypeError):
        problem_json(500, value=object())


_member = st.from_regex(r"[a-z][a-z0-9_]{2,15}", fullmatch=True).filter(
    lambda m: m not in {"type", "title", "status", "detail", "instance"}
)


@given(
    st.integers(100, 599),
    st.one_of(st.none(), st.text(max_size=50)),
    st.dictionaries(_member, st.one_of(st.integers(), st.text(max_size=20), st.booleans()), max_size=4),
)
def test_problem_json_always_parses_back_to_the_problem(
    status: int, detail: str | None, extensions: dict[str, Any]
) -> None:
    parsed = json.loads(problem_json(status, detail, **extensions))
    assert parsed == problem(status, detail, **extensions)
    assert parsed["status"] == status
    assert ("detail" in parsed) is (detail is not None)
