"""Bounded Redis calls shared by the lock modules.

Every command runs under :func:`asyncio.timeout`, whatever socket timeouts the caller's
client has, so a dead or SIGSTOPped Redis costs at most ``op_timeout`` seconds and
surfaces as :class:`LockUnavailable` instead of a hang or a transport exception.
Scripts go through the shared :class:`edge_kv.origin._scripts.LuaScript` (EVALSHA, EVAL
on NOSCRIPT), so one script object serves every client and every Redlock node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from edge_kv.core.validate import check_positive_number
from edge_kv.origin._scripts import ArgT, LuaScript
from edge_kv.origin.locks.errors import LockUnavailable

T = TypeVar("T")

DEFAULT_OP_TIMEOUT_S = 2.0
# Lua numbers are IEEE doubles: integers above this stop being exact.
MAX_TOKEN = 2**53 - 1

# Errors meaning "this node did not answer" (as opposed to a script error).
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)


def check_op_timeout(value: object) -> float:
    return check_positive_number("op_timeout", value)


def check_token(value: object) -> int:
    """A fencing token is a plain positive int that Lua still represents exactly."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"fencing token must be an integer, got {type(value).__name__} {value!r}")
    if value <= 0 or value > MAX_TOKEN:
        raise ValueError(f"fencing token must be in 1..2**53-1, got {value}")
    return value


async def bounded(aw: Awaitable[T], limit_s: float, what: str) -> T:
    """Await ``aw`` for at most ``limit_s`` seconds; transport failures become LockUnavailable."""
    try:
        async with asyncio.timeout(limit_s):
            return await aw
    except UNREACHABLE as exc:
        raise LockUnavailable(f"{what}: Redis unreachable or too slow ({type(exc).__name__}: {exc})") from exc


async def run(
    sc: LuaScript,
    client: aioredis.Redis,
    keys: Sequence[str],
    args: Sequence[ArgT],
    limit_s: float,
    what: str,
) -> Any:
    """Run ``sc`` on ``client`` within ``limit_s`` seconds (see :func:`bounded`)."""
    return await bounded(sc.run(client, keys, args), limit_s, what)
