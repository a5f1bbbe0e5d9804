"""Inside Pyodide: put the pure-Python test wheels on ``sys.path`` and run pytest.

Loaded by ``scripts/pyodide_pytest.mjs`` after it has mounted the repository (NODEFS)
at its host path. Runs under Pyodide 314 (Python 3.14 / Emscripten) only; it returns
pytest's exit code and never swallows a failure.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import re
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

#: Packages an edge-safe test must not reach even though their files are on the mounted
#: repository: importing them inside Pyodide fails loudly instead of half-working.
FORBIDDEN_PREFIXES = ("edge_kv.origin",)
REQUIRED_WHEELS = (
    "pytest",
    "pluggy",
    "iniconfig",
    "packaging",
    "pygments",
    "pytest-asyncio",
    "hypothesis",
    "sortedcontainers",
    "attrs",
)
SITE_DIR = Path("/tmp/edge_kv_test_site")
_WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<tags>.+)\.whl$")


class RunnerError(Exception):
    """The test environment inside Pyodide cannot be set up (reported, exit code 2)."""


class _ForbiddenImports(importlib.abc.MetaPathFinder):
    """Refuses origin-only modules so an edge-safe test cannot depend on them."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if any(fullname == p or fullname.startswith(p + ".") for p in FORBIDDEN_PREFIXES):
            raise ImportError(f"{fullname} is origin-only: edge-safe tests must not import it")
        return None


def _let_asyncio_runner_block() -> None:
    """Make ``asyncio.Runner`` usable from sync code, as Pyodide already does for ``asyncio.run``.

    Pyodide registers its ``WebLoop`` as the running loop for good, so ``Runner.run``
    (what pytest-asyncio >= 1.0 drives every async test with) refuses to start. Pyodide
    patches ``asyncio.run`` to call ``WebLoop.run_until_complete``, which blocks through
    JSPI stack switching; clearing the stale registration before ``Runner.run`` lets
    the runner do the same with a fresh ``WebLoop`` of its own.
    """
    import asyncio
    import asyncio.events

    original = asyncio.Runner.run

    def run(self: asyncio.Runner, coro: Any, *, context: Any = None) -> Any:
        asyncio.events._set_running_loop(None)
        return original(self, coro, context=context)

    asyncio.Runner.run = run  # type: ignore[method-assign]


class _PyodideOptions:
    """Pytest plugin: accept ini options of CPython-only plugins (pytest-timeout's ``timeout``)."""

    @staticmethod
    def pytest_addoption(parser: Any) -> None:
        parser.addini("timeout", "pytest-timeout is not available inside Pyodide; ignored")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def pick_wheels(wheel_dir: Path) -> dict[str, Path]:
    """The newest pure-Python (``py*-none-any``) wheel per project in ``wheel_dir``.

    Platform wheels (a ``cp311-...-manylinux`` build, say) cannot load in WebAssembly
    and are ignored.
    """
    chosen: dict[str, tuple[tuple[int, ...], Path]] = {}
    for wheel in sorted(wheel_dir.glob("*.whl")):
        m = _WHEEL_RE.match(wheel.name)
        if m is None or not m["tags"].endswith("-none-any"):
            continue
        name = m["name"].lower().replace("_", "-")
        key = _version_key(m["version"])
        if name not in chosen or key > chosen[name][0]:
            chosen[name] = (key, wheel)
    return {name: path for name, (_, path) in sorted(chosen.items())}


def install_wheels(wheel_dir: Path, required: Sequence[str]) -> dict[str, Path]:
    """Unzip the chosen wheels into the in-memory FS and put them on ``sys.path``."""
    wheels = pick_wheels(wheel_dir)
    missing = [r for r in required if r not in wheels]
    if missing:
        raise RunnerError(
            f"no pure-Python (py3-none-any) wheel for {missing} in {wheel_dir}: scripts/setup must "
            "fetch them with `pip download --only-binary=:all: --no-deps --platform any "
            "--implementation py --python-version 3.14 --abi none` (a platform wheel such as "
            "hypothesis' cp311 manylinux build cannot load in WebAssembly)"
        )
    SITE_DIR.mkdir(parents=True, exist_ok=True)
    for wheel in wheels.values():
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(SITE_DIR)
    sys.path.insert(0, str(SITE_DIR))
    return wheels


def _is_path_arg(arg: str) -> bool:
    """Whether ``arg`` names a test path (``tests/core/test_x.py::test_y``), not an option value."""
    return not arg.startswith("-") and Path(arg.split("::", 1)[0]).exists()


def main(root: str, argv: Sequence[str], wheel_dir: str) -> int:
    """Run pytest over the edge-safe tests of the repository at ``root``."""
    print(f"Python {sys.version} on {sys.platform}", flush=True)
    if sys.platform != "emscripten":
        print("refusing to run: this runner is for Pyodide only", file=sys.stderr)
        return 2
    try:
        wheels = install_wheels(Path(wheel_dir), REQUIRED_WHEELS)
    except RunnerError as exc:
        print(f"pyodide_pytest: {exc}", file=sys.stderr, flush=True)
        return 2
    print("wheels: " + ", ".join(p.name for p in wheels.values()), flush=True)

    os.chdir(root)
    sys.path.insert(0, root)
    # The repository is the host's working tree: leave no bytecode or caches in it.
    sys.dont_write_bytecode = True
    sys.meta_path.insert(0, _ForbiddenImports())
    _let_asyncio_runner_block()

    import pytest

    args = ["-q", "-p", "no:cacheprovider", *argv]
    if not any(_is_path_arg(a) for a in argv):
        # Default run: everything edge-safe (tests/conftest.py limits "tests" to the
        # edge-safe directories inside Pyodide) and every such file must yield tests.
        os.environ["EDGE_KV_REQUIRE_EDGE_SAFE_FILES"] = "1"
        args.append("tests")
    code = int(pytest.main(args, plugins=[_PyodideOptions()]))
    print(f"pytest exit code in Pyodide: {code}", flush=True)
    return code
