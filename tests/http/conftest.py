"""HTTP tests against the reference Worker.

By default a session-scoped offline host serves a fresh build of the Worker (built into a
temp directory with scripts/build_worker.py, from a temp copy of wrangler.toml whose ``main``
points there) with a fresh ``--persist`` directory. With ``EDGE_KV_BASE_URL`` set the same
tests run against that URL (a real ``wrangler dev`` or a deployed Worker) and the tests
marked ``host_only`` are skipped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hostproc import ROOT, HostProcess

from edge_kv.host.pytest_plugin import EdgeKvHost

BASE_URL = os.environ.get("EDGE_KV_BASE_URL", "").rstrip("/")


def write_config(directory: Path, main: Path) -> Path:
    """A copy of the project's wrangler.toml whose ``main`` is ``main``."""
    text = (ROOT / "wrangler.toml").read_text()
    text, count = re.subn(r'(?m)^main\s*=\s*".*"$', f'main = "{main}"', text)
    assert count == 1, "wrangler.toml must have one top-level main = line"
    config = directory / "wrangler.toml"
    config.write_text(text)
    return config


@pytest.fixture(scope="session")
def worker_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wrangler.toml pointing at a fresh build of the Worker (what the host runs)."""
    directory = tmp_path_factory.mktemp("worker")
    out = directory / "worker"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_worker.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return write_config(directory, out / "entry.py")


@pytest.fixture(scope="session")
def edge_kv_config_path(worker_config: Path) -> Path:
    """What the ``edge_kv_host`` fixture of edge-kv's pytest plugin serves: the reference Worker."""
    return worker_config


@pytest.fixture(scope="session")
def base_url(edge_kv_host: EdgeKvHost) -> str:
    """The reference Worker, served through the same pytest plugin users get."""
    return edge_kv_host.url


@pytest.fixture(scope="session")
def service_config(worker_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Worker config plus the test ``.dev.vars`` of the edge limit and lock tests
    (service token, test clock, test limits): one definition, one host for both modules."""
    from test_edge_limits import write_test_config

    return write_test_config(tmp_path_factory.mktemp("edge-service") / "cfg", worker_config)


@pytest.fixture(scope="session")
def service_host(service_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    host = HostProcess(service_config, tmp_path_factory.mktemp("edge-service-persist"))
    try:
        yield host.start()
    finally:
        host.close()


@pytest.fixture
def start_host(worker_config: Path, tmp_path: Path) -> Iterator[Callable[..., HostProcess]]:
    """Factory for a test's own host: ``start_host(*args, persist=None, config=None)``."""
    hosts: list[HostProcess] = []

    def make(*extra: str, persist: Path | None = None, config: Path | None = None) -> HostProcess:
        host = HostProcess(config or worker_config, persist or tmp_path / "persist", *extra)
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.close()


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as c:
        yield c


@pytest.fixture(autouse=True)
def _skip_host_only(request: pytest.FixtureRequest) -> None:
    if BASE_URL and request.node.get_closest_marker("host_only"):
        pytest.skip("host-only check (EDGE_KV_BASE_URL is set)")
