"""Bounded Redis calls of the lock modules: :mod:`edge_kv.origin._redis` with
:class:`LockUnavailable` as the error.

Every command runs under :func:`asyncio.timeout` (a dead or SIGSTOPped Redis costs at
most ``op_timeout`` seconds), a refused connection fails at once instead of going
through redis-py's retry backoff, and transport failures surface as
:class:`LockUnavailable`. Scripts go through the shared
:class:`edge_kv.origin._scripts.LuaScript` (EVALSHA, EVAL on NOSCRIPT), so one script
object serves every client and every Redlock node.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from edge_kv.core.validate import check_positive_number
from edge_kv.origin import _redis
from edge_kv.origin._redis import UNREACHABLE
from edge_kv.origin._scripts import ArgT, LuaScript
from edge_kv.origin.locks.errors import LockUnavailable

__all__ = ["DEFAULT_OP_TIMEOUT_S", "MAX_TOKEN", "UNREACHABLE", "bounded", "check_op_timeout", "run"]

T = TypeVar("T")

DEFAULT_OP_TIMEOUT_S = 2.0
# Lua numbers are IEEE doubles: integers above this stop being exact.
MAX_TOKEN = 2**53 - 1


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
    return await _redis.bounded(aw, limit_s, what, LockUnavailable)


async def run(
    sc: LuaScript,
    client: Any,
    keys: Sequence[str],
    args: Sequence[ArgT],
    limit_s: float,
    what: str,
    batched: bool = False,
) -> Any:
    """Run ``sc`` on ``client`` within ``limit_s`` seconds (see :func:`bounded`);
    ``batched``: through the client's auto-pipelined transport."""
    return await _redis.run_script(sc, client, keys, args, limit_s, what, LockUnavailable, batched)
