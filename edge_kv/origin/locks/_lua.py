"""The lock scripts, shared by :class:`RedisLock` (one node), :class:`Redlock` (each node)
and :class:`FencedStore`. Each is a ``.lua`` file of this package (package data), loaded
once with :meth:`LuaScript.from_package`; the files say what their keys and arguments are.

Lease keys: ``KEYS[1]`` the lease key holding the owner token, ``KEYS[2]`` the resource's
fencing counter (never expires: it must only grow). Both carry the same ``{hash tag}``.
"""

from __future__ import annotations

from edge_kv.origin._scripts import LuaScript

_PACKAGE = "edge_kv.origin.locks"

# -> the fencing token (an integer reply) on grant, {0, holder pttl, counter} otherwise.
ACQUIRE = LuaScript.from_package(_PACKAGE, "lock_acquire.lua")
# -> 1 deleted, 0 not the owner (nothing changed).
RELEASE = LuaScript.from_package(_PACKAGE, "lock_release.lua")
# -> 1 extended, 0 not the owner (nothing changed).
EXTEND = LuaScript.from_package(_PACKAGE, "lock_extend.lua")
# Redlock phase 2 -> 1 if this node's counter is now >= token, 0 if the lease is not ours.
RAISE_COUNTER = LuaScript.from_package(_PACKAGE, "redlock_raise_counter.lua")
# FencedStore -> {accepted, highest token, its owner, op result}.
FENCED_WRITE = LuaScript.from_package(_PACKAGE, "fenced_write.lua")


def acquire_reply(reply: int | list[int]) -> tuple[int, int, int]:
    """ACQUIRE's reply as ``(token or 0, holder pttl, counter)``."""
    if isinstance(reply, int):
        return reply, 0, reply
    token, pttl, counter = reply
    return int(token), int(pttl), int(counter)
