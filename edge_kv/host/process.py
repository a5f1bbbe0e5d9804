"""The offline host as a child process: start it for a Worker config, get its URL, stop it.

Used by the ``edge-kv`` CLI, the pytest plugin and this project's own tests. The host
prints one ``serving ... on http://...`` line once it answers; :meth:`HostProcess.start`
waits for it and raises :class:`HostExited` with everything the host printed if it ends
first (a bad config, an import error in the Worker: the message is in ``output``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ._node import node_side

__all__ = ["HostExited", "HostProcess"]

READY = re.compile(r"serving .* on (http://[0-9.]+:\d+)")


class HostExited(RuntimeError):
    """The host ended before it was ready; ``output`` holds what it printed."""

    def __init__(self, code: int, output: str) -> None:
        lines = [ln for ln in output.strip().splitlines() if "error" in ln.lower()]
        summary = lines[-1] if lines else output.strip()[-2000:]
        super().__init__(f"host exited with {code}: {summary}")
        self.code = code
        self.output = output


class HostProcess:
    """One host: ``start()`` returns the base URL once it answers; ``stop()`` ends it (SIGTERM,
    which lets pending ``ctx.waitUntil`` work finish). ``extra`` flags go to the host
    (``--python-path DIR``, ``--test-scheduled``, the server limits of docs/host.md)."""

    def __init__(self, config: Path, persist: Path, *extra: str, cwd: Path | None = None) -> None:
        self.config, self.persist, self.extra = Path(config), Path(persist), tuple(extra)
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="edge-kv-host-", suffix=".log", delete=False)  # noqa: SIM115
        self.url = ""

    def command(self, port: int = 0) -> list[str]:
        """The command line that runs this host (the Node side is installed if need be)."""
        return [
            *node_side().command(),
            "--port",
            str(port),
            "--persist",
            str(self.persist),
            "--config",
            str(self.config),
            *self.extra,
        ]

    def output(self) -> str:
        """Everything the host printed so far (stdout and stderr)."""
        return Path(self._log.name).read_text(errors="replace")

    def start(self, timeout: float = 60.0, env: dict[str, str] | None = None) -> str:
        """Start the host and return its base URL once it serves."""
        cmd = self.command()
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.cwd or self.config.parent,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = READY.search(self.output())
            if match:
                self.url = match.group(1)
                return self.url
            code = self.proc.poll()
            if code is not None:
                raise HostExited(code, self.output())
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"host not ready after {timeout}s: {self.output()[-2000:]}")

    def wait_exit(self, timeout: float = 60.0) -> int:
        """For start-up failure tests: wait for the process to end and return its exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code (None if not started)."""
        if self.proc is None:
            return None
        code = terminate(self.proc, timeout)
        self.proc = None
        return code

    def close(self) -> None:
        """Stop the host and delete its log."""
        self.stop()
        self._log.close()
        os.unlink(self._log.name)


def terminate(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """End a host process: SIGTERM (pending ``ctx.waitUntil`` work finishes), SIGKILL after
    ``timeout``; returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def flags(python_path: Sequence[Path] = (), test_scheduled: bool = False) -> list[str]:
    """Host flags for the dependency directories of a Worker and the scheduled trigger route."""
    out: list[str] = []
    for p in python_path:
        out += ["--python-path", str(p)]
    if test_scheduled:
        out.append("--test-scheduled")
    return out
