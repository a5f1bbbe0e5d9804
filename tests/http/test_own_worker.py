"""A user's own Worker, in its own directory, with ``edge-kv`` as a dependency in its
``pyproject.toml``: the host resolves it (pip, pure-Python wheels for Python 3.14) and the
Worker's ``EdgeLimiter``-backed ``enforce`` runs through the ``edge-kv`` CLI and through the
pytest plugin, as a user would run them."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from hostproc import ROOT

pytestmark = [pytest.mark.host_only, pytest.mark.slow]

ENTRY = """\
from workers import WorkerEntrypoint

from edge_kv.edge import RouteContext, Router, enforce, json_response, refusal
from edge_kv.edge.objects import LockService, RateLimiter

router = Router()


@router.route("GET", "/hello/{name}")
async def hello(rc: RouteContext):
    verdict = await enforce(rc)  # EDGE_KV_LIMITS below: 3 per minute per client IP
    if not verdict.allowed:
        return refusal(verdict)
    return json_response({"hello": rc.params["name"]}, headers=verdict.headers)


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        return await router.dispatch(request, self.env, self.ctx)
"""

CONFIG = """\
name = "my-api"
main = "src/entry.py"
compatibility_date = "2025-11-01"
compatibility_flags = ["python_workers"]

[vars]
EDGE_KV_LIMITS = '''{"limits": {"per-ip": {"key": ["ip"], "backend": "do",
  "tiers": [{"name": "ip-minute", "kind": "fixed_window", "limit": 3, "window_s": 60}]}},
  "routes": [{"prefix": "/hello/", "limits": ["per-ip"]}]}'''

[[durable_objects.bindings]]
name = "RATE_LIMITER"
class_name = "RateLimiter"

[[durable_objects.bindings]]
name = "LOCKS"
class_name = "LockService"

[[migrations]]
tag = "v1"
new_sqlite_classes = ["RateLimiter", "LockService"]
"""

USER_TEST = """\
async def test_the_fourth_call_in_a_minute_is_refused(edge_kv_host, edge_kv_client):
    ip = edge_kv_host.cf(connecting_ip="203.0.113.7")
    codes = [(await edge_kv_client.get("/hello/ada", headers=ip)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    other = await edge_kv_client.get("/hello/ada", headers=edge_kv_host.cf(connecting_ip="203.0.113.8"))
    assert other.status_code == 200 and other.json() == {"hello": "ada"}
    assert "ip-minute" in other.headers["ratelimit-policy"]
"""


@pytest.fixture(scope="module")
def edge_kv_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout as the wheel a user would get from PyPI."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("edge_kv-*.whl")
    return wheel


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, edge_kv_wheel: Path) -> Path:
    root = tmp_path_factory.mktemp("user") / "my-api"
    (root / "src").mkdir(parents=True)
    (root / "src" / "entry.py").write_text(ENTRY)
    (root / "wrangler.toml").write_text(CONFIG)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "my-api"\nversion = "0.1.0"\nrequires-python = ">=3.12"\n'
        f'dependencies = ["edge-kv @ {edge_kv_wheel.as_uri()}", "webtypy>=0.1.7"]\n\n'
        '[dependency-groups]\ndev = ["workers-py", "workers-runtime-sdk"]\n'
    )
    (root / "tests").mkdir()
    (root / "tests" / "test_api.py").write_text(USER_TEST)
    (root / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
    return root


def test_cli_serves_the_worker_with_its_dependencies(project: Path, tmp_path: Path) -> None:
    log = tmp_path / "dev.log"
    env = {
        "EDGE_KV_HOST_CACHE": str(tmp_path / "cache"),
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_kv.host.cli", "dev", "--port", "0", "--no-watch"],
            cwd=project,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 180
        url = ""
        while not url and time.monotonic() < deadline:
            found = re.search(r"serving .* on (http://[0-9.]+:\d+)", log.read_text())
            url = found.group(1) if found else ""
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        assert url, log.read_text()
        assert "resolving the Worker's dependencies: edge-kv @" in log.read_text()
        codes = [httpx.get(f"{url}/hello/ada", timeout=30).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        # the dependency directory is cached: resolved once, reused by the next start
        assert len(list((tmp_path / "cache" / "site").glob("*/.complete"))) == 1
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def test_pytest_plugin_runs_the_users_tests(project: Path) -> None:
    """Through ``edge-kv test`` (pytest's own arguments pass through) and the plugin."""
    proc = subprocess.run(
        [sys.executable, "-m", "edge_kv.host.cli", "test", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout


def test_a_binary_only_dependency_fails_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "entry.py").write_text("import numpy\n")
    (tmp_path / "wrangler.toml").write_text(
        'name = "b"\nmain = "src/entry.py"\ncompatibility_date = "2025-11-01"\ncompatibility_flags = ["python_workers"]\n'
    )
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "b"\nversion = "0"\ndependencies = ["numpy>=2"]\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "edge_kv.host.cli", "dev", "--no-watch"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"EDGE_KV_HOST_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"},
    )
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("edge-kv: error:")]
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr
    assert "numpy" in errors[0] and "pure-Python" in errors[0] and "pywrangler dev" in errors[0]
