"""``edge-kv``: run and test any Python Worker offline (installed with the package).

    edge-kv dev [PROJECT] [--config FILE] [--port 8787] [--persist DIR] [--no-watch] [host flags]
    edge-kv test [--worker DIR] [pytest args]  your tests, with the host fixture for this Worker
    edge-kv scheduled [--url URL] [--cron EXPR]   fire the scheduled handler of a running dev host
    edge-kv install [PROJECT]                 install the Node side and the Worker's dependencies

PROJECT is a directory holding ``wrangler.jsonc``/``wrangler.json``/``wrangler.toml`` (or the
config file itself); paths are relative to where the command runs. State (KV, cache, Durable
Objects) lives in ``PROJECT/.wrangler/state/edge-kv`` unless ``--persist`` says otherwise.
``dev`` restarts the host when a ``.py``, config or ``.dev.vars`` file under PROJECT changes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from ._node import NodeSideError, node_side
from .deps import DependencyError, worker_python_path
from .process import terminate

__all__ = ["find_config", "main", "state_dir"]

CONFIG_NAMES = ("wrangler.json", "wrangler.jsonc", "wrangler.toml")  # wrangler's own precedence
WATCHED_SUFFIXES = {".py", ".toml", ".json", ".jsonc", ".vars"}
SKIPPED_DIRS = {".wrangler", "node_modules", ".venv", "__pycache__", ".git", ".mypy_cache", ".ruff_cache"}


class UsageError(Exception):
    """A command-line mistake: printed as one line, exit code 2."""


def find_config(project: str | os.PathLike[str] | None, config: str | None = None) -> Path:
    """The Worker's config file: ``--config`` if given, else the first of wrangler's names
    in PROJECT (default: the current directory). Relative paths are the caller's."""
    if config:
        path = Path(config).expanduser().resolve()
        if not path.is_file():
            raise UsageError(f"no config file {path}")
        return path
    base = Path(project or ".").expanduser().resolve()
    if base.is_file():
        return base
    if not base.is_dir():
        raise UsageError(f"{base} is neither a directory nor a config file")
    for name in CONFIG_NAMES:
        if (base / name).is_file():
            return base / name
    raise UsageError(f"no {', '.join(CONFIG_NAMES)} in {base}: is this a Worker project?")


def state_dir(config: Path) -> Path:
    """Where the host keeps this Worker's local state by default (like wrangler's .wrangler/state)."""
    return config.parent / ".wrangler" / "state" / "edge-kv"


def _snapshot(root: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS]
        for name in filenames:
            if Path(name).suffix in WATCHED_SUFFIXES or name == ".dev.vars":
                p = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    out[p] = os.stat(p).st_mtime_ns
        if len(out) > 20_000:
            break
    return out


def _host_command(config: Path, args: argparse.Namespace, extra: Sequence[str]) -> list[str]:
    python_path = worker_python_path(config.parent)
    cmd = [
        *node_side().command(),
        "--config",
        str(config),
        "--port",
        str(args.port),
        "--persist",
        str(Path(args.persist).resolve() if args.persist else state_dir(config)),
    ]
    for p in python_path:
        cmd += ["--python-path", str(p)]
    if args.test_scheduled:
        cmd.append("--test-scheduled")
    return cmd + list(extra)


def cmd_dev(args: argparse.Namespace, extra: Sequence[str]) -> int:
    config = find_config(args.project, args.config)
    cmd = _host_command(config, args, extra)
    if args.no_watch:
        return subprocess.call(cmd)
    root = config.parent
    seen = _snapshot(root)
    proc: subprocess.Popen[bytes] | None = subprocess.Popen(cmd)
    try:
        while True:
            time.sleep(0.4)
            now = _snapshot(root)
            if now != seen:
                changed = sorted(set(now.items()) ^ set(seen.items()))
                seen = now
                name = os.path.relpath(changed[0][0], root) if changed else "files"
                print(f"edge-kv: {name} changed: restarting the host", file=sys.stderr, flush=True)
                if proc is not None:
                    terminate(proc)
                try:
                    cmd = _host_command(config, args, extra)  # dependencies may have changed
                except DependencyError as exc:
                    print(f"edge-kv: error: {exc}", file=sys.stderr, flush=True)
                    proc = None
                    continue
                proc = subprocess.Popen(cmd)
            elif proc is not None and proc.poll() is not None and proc.returncode != 0:
                print(
                    "edge-kv: the host stopped; waiting for a change to restart it",
                    file=sys.stderr,
                    flush=True,
                )
                proc = None
    except KeyboardInterrupt:
        return 0
    finally:
        if proc is not None:
            terminate(proc)


def cmd_test(argv: Sequence[str]) -> int:
    """``edge-kv test [--worker DIR|CONFIG] [pytest arguments]``: every argument but
    ``--worker`` goes to pytest unchanged (a leading ``--`` is dropped)."""
    args = list(argv)
    worker: str | None = None
    if args[:1] == ["--worker"] or any(a.startswith("--worker=") for a in args[:1]):
        if args[0] == "--worker":
            if len(args) < 2:
                raise UsageError("--worker needs a directory or config file")
            worker, args = args[1], args[2:]
        else:
            worker, args = args[0].split("=", 1)[1], args[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    config = find_config(worker)
    env = {**os.environ, "EDGE_KV_CONFIG": str(config)}
    return subprocess.call([sys.executable, "-m", "pytest", *args], env=env, cwd=config.parent)


def cmd_scheduled(args: argparse.Namespace, extra: Sequence[str]) -> int:
    if extra:
        raise UsageError(f"unexpected arguments: {' '.join(extra)}")
    query = urllib.parse.urlencode({"cron": args.cron} | ({"time": str(args.time)} if args.time else {}))
    url = f"{args.url.rstrip('/')}/cdn-cgi/handler/scheduled?{query}"
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            print(r.read().decode(errors="replace"))
            return 0
    except urllib.error.HTTPError as exc:
        print(f"edge-kv: error: {exc.code}: {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(
            f"edge-kv: error: no host at {args.url} ({exc.reason}): start it with `edge-kv dev` "
            "(it serves the scheduled trigger route)",
            file=sys.stderr,
        )
        return 1


def cmd_install(args: argparse.Namespace, extra: Sequence[str]) -> int:
    side = node_side()
    print(f"node side: {side.main.parent}")
    if args.project or args.config:
        config = find_config(args.project, args.config)
        for p in worker_python_path(config.parent):
            print(f"python path: {p}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-kv", description="Run and test Python Workers offline (docs/host.md)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="serve a Worker offline, restarting on change")
    dev.add_argument("project", nargs="?", help="Worker directory or config file (default: .)")
    dev.add_argument("--config", "-c", help="the wrangler config file")
    dev.add_argument("--port", type=int, default=8787)
    dev.add_argument("--persist", help="state directory (default PROJECT/.wrangler/state/edge-kv)")
    dev.add_argument("--no-watch", action="store_true", help="do not restart on file changes")
    dev.add_argument(
        "--no-test-scheduled",
        dest="test_scheduled",
        action="store_false",
        help="do not serve /__scheduled and /cdn-cgi/handler/{scheduled,alarm}",
    )
    sub.add_parser(
        "test",
        help="run pytest with the edge_kv_host fixture serving this Worker: "
        "edge-kv test [--worker DIR|CONFIG] [pytest arguments]",
        add_help=False,
    )
    sched = sub.add_parser("scheduled", help="fire the scheduled handler of a running `edge-kv dev`")
    sched.add_argument("--url", default="http://127.0.0.1:8787")
    sched.add_argument("--cron", default="* * * * *")
    sched.add_argument("--time", type=int, help="scheduledTime in ms since the epoch (default: now)")
    inst = sub.add_parser("install", help="install the host's Node side (and a Worker's dependencies)")
    inst.add_argument("project", nargs="?")
    inst.add_argument("--config", "-c")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edge-kv`` command; returns the exit code."""
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    handlers = {"dev": cmd_dev, "scheduled": cmd_scheduled, "install": cmd_install}
    try:
        if argv[:1] == ["test"]:
            return cmd_test(argv[1:])  # pytest's own options must pass through untouched
        args, extra = parser.parse_known_args(argv)
        return handlers[args.command](args, extra)
    except UsageError as exc:
        print(f"edge-kv: error: {exc}", file=sys.stderr)
        return 2
    except (DependencyError, NodeSideError) as exc:
        print(f"edge-kv: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
