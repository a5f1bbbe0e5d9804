"""Lua scripts run in one round trip: ``EVALSHA``, falling back to ``EVAL`` on ``NOSCRIPT``.

Every origin primitive that needs atomicity (limiters, locks, idempotency) keeps its
logic in one Lua script. :class:`LuaScript` holds the source and its SHA1 and runs it
with ``EVALSHA``; when the server does not know the script yet (fresh server, restart,
``SCRIPT FLUSH``, failover) it answers ``NOSCRIPT`` and we send ``EVAL`` with the full
source, which both runs the script and puts it back in the server's script cache. So
the steady state is one small round trip, and a cold server costs one extra round trip
once, never a failed call.

Works with redis-py's asyncio client (:meth:`LuaScript.run`) and its blocking client
(:meth:`LuaScript.run_sync`); nothing here is specific to one feature.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

KeyT = str | bytes
ArgT = str | bytes | int | float


class LuaScript:
    """One Lua script, identified by the SHA1 of its source.

    ``name`` only appears in ``repr`` and error messages. Arguments are sent as given:
    pass integers as Python ``int`` (redis-py encodes them in decimal, exactly) — never
    as floats, which would be formatted with ``repr`` and may not round-trip through Lua.
    """

    __slots__ = ("name", "sha", "source")

    def __init__(self, source: str, name: str = "script") -> None:
        if not source.strip():
            raise ValueError("Lua script source is empty")
        self.source = source
        self.name = name
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()

    @classmethod
    def from_package(cls, package: str, filename: str) -> LuaScript:
        """Load ``filename`` shipped as package data of ``package`` (e.g. ``lua/gcra.lua``)."""
        text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
        return cls(text, name=filename)

    async def run(self, client: Any, keys: Sequence[KeyT] = (), args: Sequence[ArgT] = ()) -> Any:
        """Run on an asyncio client; one round trip unless the server lacks the script."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)

    def run_sync(self, client: Any, keys: Sequence[KeyT] = (), args: Sequence[ArgT] = ()) -> Any:
        """Same as :meth:`run` for the blocking ``redis.Redis`` client."""
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return client.eval(self.source, len(keys), *keys, *args)

    def __repr__(self) -> str:
        return f"LuaScript({self.name!r}, sha={self.sha[:12]})"
