"""One way to run a Lua script, one layout for Lua sources, one bounded-wait helper.

* Every script runs through :class:`edge_kv.origin._scripts.LuaScript` (EVALSHA, EVAL on
  NOSCRIPT): no ``register_script``/``eval``/``evalsha`` calls and no inline Lua
  elsewhere in the origin package.
* Every Lua source is a package-data ``.lua`` file beside the module that runs it
  (``<package>/<name>.lua``), loaded with ``LuaScript.from_package``.
* Every Redis call is bounded by :mod:`edge_kv.origin._redis` (``bounded``,
  ``run_script``, ``fan_out``): the Redis-backed modules contain no timer of their own.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ORIGIN = Path(__file__).resolve().parents[2] / "edge_kv" / "origin"
SCRIPT_RUNNER = ORIGIN / "_scripts.py"
WAIT_HELPER = ORIGIN / "_redis.py"
# The modules that talk to Redis.
REDIS_MODULES = [
    ORIGIN / "ratelimit" / "limiter.py",
    ORIGIN / "locks" / "redis_lock.py",
    ORIGIN / "locks" / "redlock.py",
    ORIGIN / "locks" / "fencing.py",
    ORIGIN / "locks" / "_io.py",
    ORIGIN / "idempotency" / "redis_store.py",
    ORIGIN / "idempotency" / "dedup.py",
    ORIGIN / "resilience" / "breaker_redis.py",
]


def _py_files() -> list[Path]:
    return sorted(p for p in ORIGIN.rglob("*.py") if p != SCRIPT_RUNNER)


@pytest.mark.parametrize("path", _py_files(), ids=lambda p: str(p.relative_to(ORIGIN)))
def test_scripts_run_only_through_luascript(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for pattern in (r"\.register_script\(", r"\.evalsha\(", r"\.eval\(", r"redis\.call\("):
        assert not re.search(pattern, text), f"{path.name}: {pattern} (use LuaScript / a .lua file)"


def test_lua_sources_are_package_files_loaded_by_name() -> None:
    sources = sorted(ORIGIN.rglob("*.lua"))
    assert sources, "no Lua sources found"
    python = "\n".join(p.read_text(encoding="utf-8") for p in _py_files())
    for lua in sources:
        assert (lua.parent / "__init__.py").exists(), f"{lua.relative_to(ORIGIN)}: not beside its module"
        package = ".".join(lua.parent.relative_to(ORIGIN.parent.parent).parts)
        assert re.search(
            rf"from_package\(\s*(_PACKAGE|\"{re.escape(package)}\")\s*,\s*\"{re.escape(lua.name)}\"\)", python
        ), f"{lua.relative_to(ORIGIN)} is not loaded with LuaScript.from_package"


@pytest.mark.parametrize("path", REDIS_MODULES, ids=lambda p: str(p.relative_to(ORIGIN)))
def test_redis_calls_use_the_shared_bounded_wait(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "asyncio.timeout(" not in text and "asyncio.wait(" not in text and "wait_for(" not in text, (
        f"{path.name} bounds its own waits; use edge_kv.origin._redis"
    )
    assert "_redis." in text or "from edge_kv.origin.locks._io import" in text


def test_the_helper_is_where_the_timer_lives() -> None:
    text = WAIT_HELPER.read_text(encoding="utf-8")
    assert "asyncio.timeout(" in text and "def prepare(" in text
