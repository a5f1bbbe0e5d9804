"""The layering rules of docs/architecture.md, enforced on the source (AST, every import
statement, including ones inside functions):

* ``edge_kv/core`` imports only the standard library and itself;
* ``edge_kv/edge`` never imports ``edge_kv.origin``; only the runtime seam
  (``edge/runtime/``), ``edge/http.py`` and the Durable Object shells (``edge/objects.py``)
  import ``js``/``pyodide``/``workers``; nothing else outside the stdlib;
* ``edge_kv/origin`` never imports ``edge_kv.edge``;
* ``src/`` (the reference Worker) imports ``edge_kv.edge`` and ``edge_kv.core``, the
  runtime and its own modules, never ``edge_kv.origin``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "edge_kv"
RUNTIME = {"js", "pyodide", "workers"}
RUNTIME_SEAM = {"edge/runtime", "edge/http.py", "edge/objects.py"}


def imports(path: Path) -> list[tuple[str, int]]:
    """Absolute module names imported by ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.append((name, node.lineno))
    return found


def files(under: Path) -> list[Path]:
    return sorted(p for p in under.rglob("*.py") if "__pycache__" not in p.parts)


def violations(under: Path, allowed: object) -> list[str]:
    out = []
    for path in files(under):
        rel = path.relative_to(PKG if under.is_relative_to(PKG) else ROOT).as_posix()
        for name, line in imports(path):
            reason = allowed(rel, name)  # type: ignore[operator]
            if reason:
                out.append(f"{rel}:{line} imports {name}: {reason}")
    return out


def top(name: str) -> str:
    return name.split(".", 1)[0]


def core_rule(rel: str, name: str) -> str | None:
    if name == "edge_kv.core" or name.startswith("edge_kv.core."):
        return None
    if top(name) in sys.stdlib_module_names and top(name) != "edge_kv":
        return None
    return "core may import only the standard library"


def edge_rule(rel: str, name: str) -> str | None:
    if name.startswith("edge_kv.origin"):
        return "edge must not import origin"
    if name.startswith("edge_kv.host"):
        return "edge must not import the offline host (CPython tooling)"
    if top(name) in RUNTIME:
        if any(rel == s or rel.startswith(s + "/") for s in RUNTIME_SEAM):
            return None
        return "only the runtime seam, http.py and the Durable Object shells touch the runtime"
    if top(name) == "edge_kv" or top(name) in sys.stdlib_module_names:
        return None
    return "edge may import only the standard library, the runtime and edge_kv"


def origin_rule(rel: str, name: str) -> str | None:
    if name.startswith("edge_kv.edge"):
        return "origin must not import edge"
    if name.startswith("edge_kv.host"):
        return "origin must not import the offline host (CPython tooling)"
    if top(name) in RUNTIME:
        return "origin must not import the Workers runtime"
    return None


def host_rule(rel: str, name: str) -> str | None:
    if name.startswith(("edge_kv.edge", "edge_kv.origin")):
        return "the host runs Workers; it does not import the library it hosts"
    return None


def src_rule(rel: str, name: str) -> str | None:
    if name.startswith(("edge_kv.origin", "edge_kv.host")):
        return "the Worker must not import origin or the host"
    local = {p.stem for p in (ROOT / "src").glob("*.py")}
    if top(name) in RUNTIME | local or top(name) in sys.stdlib_module_names or top(name) == "edge_kv":
        return None
    return "the Worker imports the stdlib, the runtime, edge_kv.edge/core and its own modules"


@pytest.mark.parametrize(
    ("layer", "rule"),
    [
        (PKG / "core", core_rule),
        (PKG / "edge", edge_rule),
        (PKG / "origin", origin_rule),
        (PKG / "host", host_rule),
        (ROOT / "src", src_rule),
    ],
    ids=["core", "edge", "origin", "host", "src"],
)
def test_layer_imports(layer: Path, rule: object) -> None:
    assert files(layer), f"{layer} has no modules"
    problems = violations(layer, rule)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("rule", "rel", "name"),
    [
        (core_rule, "core/x.py", "redis"),
        (core_rule, "core/x.py", "edge_kv.edge.http"),
        (edge_rule, "edge/ratelimit/x.py", "js"),
        (edge_rule, "edge/x.py", "edge_kv.origin.locks"),
        (edge_rule, "edge/x.py", "httpx"),
        (origin_rule, "origin/x.py", "edge_kv.edge.runtime"),
        (edge_rule, "edge/x.py", "edge_kv.host.cli"),
        (host_rule, "host/x.py", "edge_kv.origin.locks"),
        (src_rule, "src/entry.py", "edge_kv.origin"),
    ],
)
def test_the_rules_catch_violations(rule: object, rel: str, name: str) -> None:
    """The checker itself can fail: each forbidden import is reported."""
    assert rule(rel, name)  # type: ignore[operator]
