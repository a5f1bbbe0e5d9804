"""Top-level pytest configuration, shared by the CPython run and the Pyodide run.

Kept minimal and Pyodide-safe (stdlib + pytest + hypothesis only), because
``scripts/pyodide_pytest.mjs`` loads it inside Pyodide 314 too.

Edge-safe test modules are the ones under :data:`EDGE_SAFE_DIRS`. They may import
only the standard library, pytest, hypothesis, pytest-asyncio, ``edge_kv.core`` and
``edge_kv.edge``; they run unchanged on CPython and inside Pyodide. This file is the
single definition of that set:

* every test collected from those directories gets the ``edge_safe`` marker
  (``pytest -m edge_safe`` on CPython selects what the Pyodide run executes);
* inside Pyodide, everything else under ``tests/`` is not collected at all;
* with ``EDGE_KV_REQUIRE_EDGE_SAFE_FILES=1`` (the Pyodide runner sets it for its default
  run) every ``test_*.py`` file in those directories must yield at least one test, so a
  module that is silently skipped at import time (``importorskip`` of a CPython-only
  package, say) fails the run instead of shrinking it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EDGE_SAFE_DIRS: tuple[str, ...] = ("tests/core", "tests/edge")
IN_PYODIDE = sys.platform == "emscripten"
_STRICT_ENV = "EDGE_KV_REQUIRE_EDGE_SAFE_FILES"

_EDGE_SAFE_PATHS = tuple((ROOT / d).resolve() for d in EDGE_SAFE_DIRS)


def is_edge_safe(path: Path) -> bool:
    """Whether ``path`` lies in one of the edge-safe test directories."""
    resolved = path.resolve()
    return any(resolved.is_relative_to(d) for d in _EDGE_SAFE_PATHS)


def edge_safe_test_files() -> list[Path]:
    """The ``test_*.py`` files on disk that both runs must collect."""
    files: list[Path] = []
    for d in _EDGE_SAFE_PATHS:
        if d.is_dir():
            files.extend(p for p in d.rglob("test_*.py") if "__pycache__" not in p.parts)
    return sorted(files)


try:  # hypothesis is a dev dependency and one of the Pyodide wheels; stay importable without it.
    from hypothesis import settings
except ImportError:  # pragma: no cover - only without the dev extra
    pass
else:
    # The machine is shared and Pyodide is several times slower than CPython, so a
    # per-example deadline would only produce flaky failures. Inside Pyodide the
    # repository is mounted from the host: keep the example database out of it.
    settings.register_profile(
        "edge_kv",
        deadline=None,
        print_blob=True,
        **({"database": None} if IN_PYODIDE else {}),
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "edge_kv"))


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Inside Pyodide, collect nothing outside the edge-safe directories."""
    if not IN_PYODIDE:
        return None
    path = collection_path.resolve()
    for d in _EDGE_SAFE_PATHS:
        if path.is_relative_to(d) or d.is_relative_to(path):
            return None
    return True


def pytest_itemcollected(item: pytest.Item) -> None:
    if is_edge_safe(item.path):
        item.add_marker(pytest.mark.edge_safe)


_collected_files: set[Path] = set()


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.passed:
        for node in report.result:
            if isinstance(node, pytest.Item):
                _collected_files.add(node.path.resolve())


def pytest_collection_finish(session: pytest.Session) -> None:
    if os.environ.get(_STRICT_ENV) != "1":
        return
    _collected_files.update(item.path.resolve() for item in session.items)
    missing = [p for p in edge_safe_test_files() if p not in _collected_files]
    if missing:
        names = ", ".join(str(p.relative_to(ROOT)) for p in missing)
        raise pytest.UsageError(
            f"edge-safe test modules yielded no tests here ({sys.platform}): {names}. "
            "Modules under " + ", ".join(EDGE_SAFE_DIRS) + " must run unchanged on CPython and Pyodide."
        )
