"""A Worker's Python dependencies, made importable in the offline host.

Python Workers declare dependencies in ``pyproject.toml`` (``[project] dependencies``);
``pywrangler`` vendors them into ``python_modules/``. The host takes both:

* an existing ``python_modules/`` next to the config is used as it is;
* the ``pyproject.toml`` dependencies are resolved with pip for Pyodide's interpreter
  (CPython 3.14, pure-Python wheels only: ``--platform any --abi none``), unpacked into
  a directory under the edge-kv cache keyed by the requirement list, and reused until the
  list changes.

Packages that exist only as Pyodide builds (numpy, pydantic-core, ...) come from Pyodide's
own CDN, which is out of reach offline: :class:`DependencyError` says so in one line
naming the package.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from ._node import _FileLock, cache_root

__all__ = ["DependencyError", "project_dependencies", "worker_python_path"]

# Provided by the runtime (and the host): never installed into a Worker.
RUNTIME_PROVIDED = {"workers-runtime-sdk", "workers-py", "webtypy", "pyodide-py"}
PYODIDE_PYTHON = "3.14"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class DependencyError(RuntimeError):
    """A dependency of the Worker cannot be had offline; the message names it and says why."""


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_dependencies(pyproject: Path) -> list[str]:
    """The ``[project] dependencies`` of ``pyproject`` minus what the runtime provides."""
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DependencyError(f"cannot read {pyproject}: {exc}") from exc
    deps = data.get("project", {}).get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise DependencyError(f"{pyproject}: [project] dependencies must be a list of strings")
    out = []
    for dep in deps:
        m = _NAME.match(dep)
        if m and _normalise(m.group(1)) in RUNTIME_PROVIDED:
            continue
        out.append(dep.strip())
    return out


def _explain(stderr: str, requirements: list[str]) -> str:
    """One line out of pip's failure: which package, and what to do."""
    m = re.search(r"No matching distribution found for ([^\s]+)", stderr) or re.search(
        r"Could not find a version that satisfies the requirement ([^\s]+)", stderr
    )
    if m:
        pkg = m.group(1)
        return (
            f"dependency {pkg}: no pure-Python wheel for Python {PYODIDE_PYTHON} on PyPI (it is a binary "
            "package, which only exists as a Pyodide build fetched from Pyodide's CDN, unreachable "
            "offline; or it ships only a source distribution): use a pure-Python alternative, or run "
            "this Worker under `pywrangler dev` online"
        )
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    detail = lines[-1] if lines else "pip failed"
    return f"resolving the Worker's dependencies ({', '.join(requirements)}) failed: {detail}"


def install_dependencies(requirements: list[str], cache: Path | None = None) -> Path:
    """Resolve ``requirements`` to pure-Python wheels and unpack them into a cached directory;
    return it. Idempotent and safe under concurrent callers (file lock)."""
    key = hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()[:16]
    base = (cache or cache_root()) / "site"
    target = base / key
    done = target / ".complete"
    if done.is_file():
        return target
    with _FileLock(base / f"{key}.lock"):
        if done.is_file():
            return target
        wheels = base / f"{key}.wheels"
        shutil.rmtree(wheels, ignore_errors=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--platform",
            "any",
            "--implementation",
            "py",
            "--abi",
            "none",
            "--python-version",
            PYODIDE_PYTHON,
            "-d",
            str(wheels),
            *requirements,
        ]
        print(f"edge-kv: resolving the Worker's dependencies: {', '.join(requirements)}", file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise DependencyError(_explain(proc.stderr or proc.stdout, requirements))
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for wheel in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(target)
        shutil.rmtree(wheels, ignore_errors=True)
        done.touch()
    return target


def worker_python_path(project: Path, cache: Path | None = None) -> list[Path]:
    """The directories to put on the Worker's ``sys.path``: ``python_modules/`` if present,
    then the resolved ``pyproject.toml`` dependencies (if any)."""
    out: list[Path] = []
    vendored = project / "python_modules"
    if vendored.is_dir():
        out.append(vendored.resolve())
    pyproject = project / "pyproject.toml"
    if pyproject.is_file():
        requirements = project_dependencies(pyproject)
        if requirements:
            out.append(install_dependencies(requirements, cache))
    return out
