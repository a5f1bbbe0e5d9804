"""pytest plugin (registered through the ``pytest11`` entry point, so installing edge-kv
enables it): test your own Worker over HTTP against the offline host.

Fixtures:

* ``edge_kv_host`` (session): starts the host for your Worker config once per session
  and yields an :class:`EdgeKvHost` (``url``, ``cf(...)`` request overrides,
  ``scheduled(...)``, ``alarm(...)``). The config is ``--edge-kv-config`` /
  ``EDGE_KV_CONFIG`` / the ``edge_kv_config`` ini option, else ``wrangler.*`` in pytest's
  rootdir. With ``--edge-kv-base-url`` (or ``EDGE_KV_BASE_URL``) no host is started and
  the same tests run against that URL (``wrangler dev``, a deployed Worker); tests that
  need a host-only feature (``cf`` overrides, triggering alarms) are skipped there.
* ``edge_kv_client`` (function): an ``httpx.AsyncClient`` on ``edge_kv_host.url``.

Every pytest session loads the plugin once edge-kv is installed, so it imports only the
standard library and pytest; httpx (``pip install edge-kv[host]``) only when a client is
asked for.

Nothing starts unless a test asks for a fixture, so the plugin costs nothing elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import httpx

    from .process import HostProcess

__all__ = ["CF_HEADER", "EdgeKvHost"]

# The request header the host turns into request.cf (never forwarded to the Worker).
CF_HEADER = "x-edge-kv-test-cf"


class EdgeKvHost:
    """A running Worker under test: the host this session started, or a remote URL."""

    def __init__(self, url: str, process: HostProcess | None = None) -> None:
        self.url = url.rstrip("/")
        self.process = process

    @property
    def is_local(self) -> bool:
        """True when this session's offline host serves the Worker (host-only features work)."""
        return self.process is not None

    def _require_local(self, what: str) -> None:
        if not self.is_local:
            pytest.skip(f"{what} needs the offline host (the tests run against {self.url})")

    def cf(self, connecting_ip: str | None = None, **fields: Any) -> dict[str, str]:
        """Headers that make the host present ``request.cf`` with ``fields`` (``country="DE"``,
        ``continent="EU"``, ``asn=13335``, ...) and, optionally, the client IP
        (``CF-Connecting-IP``). Skips the test against a remote URL, where Cloudflare sets them."""
        self._require_local("request.cf overrides")
        doc: dict[str, Any] = dict(fields)
        if connecting_ip is not None:
            doc["connectingIp"] = connecting_ip
        return {CF_HEADER: json.dumps(doc)}

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """A new ``httpx.AsyncClient`` on this Worker (close it, or use ``async with``).
        httpx is the plugin's one optional dependency (``pip install edge-kv[host]``);
        nothing else here needs it."""
        try:
            import httpx
        except ImportError:
            raise RuntimeError(
                "edge_kv_host.client() and the edge_kv_client fixture need httpx: pip install edge-kv[host]"
            ) from None
        kwargs.setdefault("timeout", 30)
        return httpx.AsyncClient(base_url=self.url, **kwargs)

    async def _trigger(self, path: str, params: dict[str, str], what: str) -> None:
        """GET a host trigger route (standard library only); AssertionError unless 200."""
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"

        def get() -> tuple[int, str]:
            try:
                with urllib.request.urlopen(url, timeout=60) as r:
                    return int(r.status), r.read().decode(errors="replace")
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode(errors="replace")

        status, text = await asyncio.to_thread(get)
        assert status == 200, f"{what} failed: {status} {text}"

    async def scheduled(self, cron: str = "* * * * *", scheduled_time_ms: int | None = None) -> None:
        """Run the Worker's scheduled handler now (``/cdn-cgi/handler/scheduled``, as
        ``wrangler dev --test-scheduled`` serves it); raises AssertionError if it failed."""
        params: dict[str, str] = {"cron": cron}
        if scheduled_time_ms is not None:
            params["time"] = str(scheduled_time_ms)
        await self._trigger("/cdn-cgi/handler/scheduled", params, "scheduled handler")

    async def alarm(self, binding: str, *, name: str | None = None, id: str | None = None) -> None:
        """Run a Durable Object's ``alarm()`` now (offline host only); the object is named
        like ``idFromName(name)`` or given by its hex ``id``."""
        self._require_local("triggering an alarm")
        params = {"binding": binding}
        if name is not None:
            params["name"] = name
        if id:
            params["id"] = id
        await self._trigger("/cdn-cgi/handler/alarm", params, "alarm")

    def output(self) -> str:
        """What the host printed so far (the Worker's print() and logs); "" for a remote URL."""
        return self.process.output() if self.process else ""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("edge-kv", "edge-kv offline Workers host")
    group.addoption("--edge-kv-config", help="the Worker's wrangler config (default: wrangler.* in rootdir)")
    group.addoption(
        "--edge-kv-base-url",
        help="run the HTTP tests against this URL (wrangler dev, a deployed Worker) instead of the host",
    )
    parser.addini("edge_kv_config", "the Worker's wrangler config for the edge_kv_host fixture", default="")


def _config_path(config: pytest.Config) -> Path:
    explicit = (
        config.getoption("--edge-kv-config")
        or os.environ.get("EDGE_KV_CONFIG")
        or config.getini("edge_kv_config")
    )
    if explicit:
        path = Path(str(explicit))
        return path if path.is_absolute() else (Path(config.rootpath) / path).resolve()
    from .cli import find_config

    return find_config(config.rootpath)


@pytest.fixture(scope="session")
def edge_kv_config_path(request: pytest.FixtureRequest) -> Path:
    """The wrangler config the host serves. Override this fixture in a ``conftest.py`` to
    build the config in the test session (a generated ``main``, test vars)."""
    return _config_path(request.config)


@pytest.fixture(scope="session")
def edge_kv_host(request: pytest.FixtureRequest) -> Iterator[EdgeKvHost]:
    """The Worker under test, served by the offline host for the whole session."""
    config = request.config
    base_url = config.getoption("--edge-kv-base-url") or os.environ.get("EDGE_KV_BASE_URL")
    if base_url:
        yield EdgeKvHost(str(base_url))
        return
    from .deps import worker_python_path
    from .process import HostProcess, flags

    worker_config: Path = request.getfixturevalue("edge_kv_config_path")
    persist = Path(tempfile.mkdtemp(prefix="edge-kv-state-"))
    host = HostProcess(
        worker_config, persist, *flags(worker_python_path(worker_config.parent), test_scheduled=True)
    )
    try:
        url = host.start(timeout=120)
        yield EdgeKvHost(url, host)
    finally:
        host.close()
        shutil.rmtree(persist, ignore_errors=True)


@pytest.fixture
async def edge_kv_client(edge_kv_host: EdgeKvHost) -> AsyncIterator[httpx.AsyncClient]:
    """An ``httpx.AsyncClient`` on the Worker under test (needs pytest-asyncio or anyio)."""
    async with edge_kv_host.client() as client:
        yield client
