"""Runtime rules the host must reproduce, each shown to be able to fail."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from hostproc import HostExited, HostProcess

CONCURRENT = 200


async def hammer(base_url: str, counter: str, n: int = CONCURRENT) -> tuple[list[int], int]:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as c:
        replies = await asyncio.gather(
            *(c.post(f"/do/counter/{counter}/increment", json={"by": 1}) for _ in range(n))
        )
        assert all(r.status_code == 200 for r in replies), [r.text for r in replies if r.status_code != 200][
            :3
        ]
        final = (await c.get(f"/do/counter/{counter}")).json()["value"]
    return [r.json()["value"] for r in replies], final


async def test_concurrent_increments_are_exact(base_url: str) -> None:
    values, final = await hammer(base_url, uuid.uuid4().hex)
    assert final == CONCURRENT
    assert sorted(values) == list(range(1, CONCURRENT + 1))  # every increment saw a distinct state


@pytest.mark.host_only
@pytest.mark.slow
async def test_without_input_gate_the_same_load_loses_updates(start_host: Callable[..., HostProcess]) -> None:
    """Proves the test above can fail: Counter.increment really races without the gate."""
    host = start_host("--no-input-gate")
    _, final = await hammer(host.start(), uuid.uuid4().hex)
    assert final < CONCURRENT


@pytest.mark.host_only
@pytest.mark.slow
async def test_state_survives_a_restart(start_host: Callable[..., HostProcess], tmp_path: Path) -> None:
    persist = tmp_path / "state"
    first = start_host(persist=persist)
    async with httpx.AsyncClient(base_url=first.start(), timeout=30) as c:
        await c.put("/kv/kept", json={"value": "still here"})
        await c.post("/do/counter/kept/increment", json={"by": 7})
        await c.post("/do/counter/kept/sql", json={"text": "row"})
        await c.put("/cache/kept", json={"value": "c", "max_age": 600})
    assert first.stop() == 0
    second = start_host(persist=persist)
    async with httpx.AsyncClient(base_url=second.start(), timeout=30) as c:
        assert (await c.get("/kv/kept")).json()["value"] == "still here"
        assert (await c.get("/do/counter/kept")).json()["value"] == 7
        rows = (await c.post("/do/counter/kept/sql", json={"text": "row2"})).json()["rows"]
        assert [r["text"] for r in rows] == ["row", "row2"]
        assert (await c.get("/cache/kept")).status_code == 200
    fresh = start_host(persist=tmp_path / "other")
    async with httpx.AsyncClient(base_url=fresh.start(), timeout=30) as c:
        assert (await c.get("/kv/kept")).status_code == 404  # and a new directory really is empty
        assert (await c.get("/do/counter/kept")).json()["value"] == 0


async def test_alarm_fires_once(client: httpx.AsyncClient) -> None:
    counter = uuid.uuid4().hex
    scheduled = (await client.post(f"/do/counter/{counter}/alarm", json={"delay_ms": 1000})).json()[
        "scheduled"
    ]
    state = (await client.get(f"/do/counter/{counter}/alarm")).json()
    assert state["fired"] == 0 and state["pending"] == pytest.approx(scheduled)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        state = (await client.get(f"/do/counter/{counter}/alarm")).json()
        if state["fired"]:
            break
    assert state == {"name": counter, "fired": 1, "pending": None}
    assert time.time() * 1000 >= scheduled
    await asyncio.sleep(1.5)
    assert (await client.get(f"/do/counter/{counter}/alarm")).json()["fired"] == 1


# ---- start-up failures: one line, non-zero exit ----


def project_copy(tmp_path: Path, worker_config: Path) -> tuple[Path, Path]:
    """A writable copy of the built Worker and its config, to break on purpose."""
    built = Path(worker_config.parent / "worker")
    work = tmp_path / "broken"
    shutil.copytree(built, work / "worker")
    config = work / "wrangler.toml"
    config.write_text(worker_config.read_text().replace(str(built), str(work / "worker")))
    return work, config


def start_fails(host: HostProcess) -> str:
    with pytest.raises(HostExited) as info:
        host.start()
    assert info.value.code != 0
    lines = [line for line in info.value.output.splitlines() if line.strip()]
    assert len(lines) == 1, info.value.output
    assert lines[0].startswith("edge-kv host: error: ")
    return lines[0]


@pytest.mark.host_only
def test_missing_durable_object_class(
    start_host: Callable[..., HostProcess], worker_config: Path, tmp_path: Path
) -> None:
    _, config = project_copy(tmp_path, worker_config)
    config.write_text(
        config.read_text()
        .replace('class_name = "Counter"', 'class_name = "Nope"')
        .replace('new_sqlite_classes = ["Counter"]', 'new_sqlite_classes = ["Nope"]')
    )
    line = start_fails(start_host(config=config))
    assert "missing class" in line and "'Nope'" in line


@pytest.mark.host_only
def test_missing_default_entrypoint(
    start_host: Callable[..., HostProcess], worker_config: Path, tmp_path: Path
) -> None:
    work, config = project_copy(tmp_path, worker_config)
    entry = work / "worker" / "entry.py"
    entry.write_text(
        entry.read_text().replace("class Default(WorkerEntrypoint)", "class Other(WorkerEntrypoint)")
    )
    assert "'Default'" in start_fails(start_host(config=config))


@pytest.mark.host_only
@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda text: text + "\n[[kv_namespaces]\nbinding = 1\n", "bad config"),
        (
            lambda text: text.replace('compatibility_flags = ["python_workers"]', "compatibility_flags = []"),
            "python_workers",
        ),
        (
            lambda text: text.replace('new_sqlite_classes = ["Counter"]', "new_classes = []"),
            "new_sqlite_classes",
        ),
    ],
    ids=["toml-syntax", "no-python-flag", "no-sqlite-migration"],
)
def test_bad_wrangler_toml(
    start_host: Callable[..., HostProcess],
    worker_config: Path,
    tmp_path: Path,
    edit: Callable[[str], str],
    expected: str,
) -> None:
    _, config = project_copy(tmp_path, worker_config)
    config.write_text(edit(config.read_text()))
    assert expected in start_fails(start_host(config=config))


@pytest.mark.host_only
def test_missing_config_file(start_host: Callable[..., HostProcess], tmp_path: Path) -> None:
    assert "bad config" in start_fails(start_host(config=tmp_path / "nope.toml"))


@pytest.mark.host_only
def test_python_exception_at_import(
    start_host: Callable[..., HostProcess], worker_config: Path, tmp_path: Path
) -> None:
    work, config = project_copy(tmp_path, worker_config)
    entry = work / "worker" / "entry.py"
    entry.write_text(entry.read_text() + "\nimport no_such_module_here\n")
    line = start_fails(start_host(config=config))
    assert "importing entry.py" in line and "ModuleNotFoundError" in line and "no_such_module_here" in line
