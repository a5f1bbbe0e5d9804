"""Replay protection for RFC 9421 signatures: each (keyid, nonce) is accepted once.

A signature is acceptable while its ``created`` lies in ``[now - max_age, now + skew]``,
so a nonce must be remembered for ``max_age + skew`` seconds after it is first seen;
after that the signature itself has expired and the nonce may be forgotten.

:class:`RedisNonceStore` (``SET key 1 NX EX ttl``: one round trip, atomic, shared by
every worker process and host) is the production store; :class:`MemoryNonceStore` is for
unit tests and single-process tools (it does not protect a fleet).

A store that cannot answer raises :class:`NonceStoreUnavailable` (an
:class:`~edge_kv.core.errors.Unavailable`): the verifier then refuses the request
(fail closed, 503), it never skips the replay check.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from edge_kv.core.errors import InvalidInput, Unavailable

__all__ = ["MemoryNonceStore", "NonceStore", "NonceStoreUnavailable", "RedisNonceStore", "nonce_key"]


class NonceStoreUnavailable(Unavailable):
    """The nonce store did not answer in time; whether the nonce was recorded is unknown."""

    code = "nonce_store_unavailable"


@runtime_checkable
class NonceStore(Protocol):
    async def claim(self, key: str, ttl_s: int) -> bool:
        """Record ``key`` for ``ttl_s`` seconds; ``True`` if it was new, ``False`` if it
        is already recorded (a replay)."""
        ...


def nonce_key(keyid: str, nonce: str) -> str:
    """A fixed-length key for (keyid, nonce): nonces are scoped per key, and their
    length (chosen by the sender) never reaches the store."""
    digest = hashlib.sha256(keyid.encode("utf-8") + b"\x00" + nonce.encode("utf-8")).hexdigest()
    return digest


def _check_ttl(ttl_s: int) -> int:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s <= 0:
        raise InvalidInput(f"ttl_s must be a positive integer, got {ttl_s!r}")
    return ttl_s


class MemoryNonceStore:
    """In-process store with expiry (``clock`` in seconds, monotonic by default).

    ``max_entries`` bounds memory: when full after purging expired entries, ``claim``
    raises :class:`NonceStoreUnavailable` instead of forgetting live nonces.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_entries: int = 100_000) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries <= 0:
            raise InvalidInput("max_entries must be a positive integer")
        self._clock = clock
        self._max = max_entries
        self._seen: dict[str, float] = {}
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def _purge(self, now: float) -> None:
        for key in [k for k, until in self._seen.items() if until <= now]:
            del self._seen[key]

    async def claim(self, key: str, ttl_s: int) -> bool:
        _check_ttl(ttl_s)
        async with self._lock:
            now = self._clock()
            until = self._seen.get(key)
            if until is not None and until > now:
                return False
            if len(self._seen) >= self._max:
                self._purge(now)
                if len(self._seen) >= self._max:
                    raise NonceStoreUnavailable(
                        f"in-memory nonce store is full ({self._max} live nonces); refusing rather than forgetting"
                    )
            self._seen[key] = now + ttl_s
            return True


class RedisNonceStore:
    """``SET <prefix><key> 1 NX EX <ttl>`` on a redis-py asyncio client (or cluster
    client: one key per command), bounded by ``timeout_s``."""

    def __init__(
        self, client: Any, *, prefix: str = "edge-kv:httpsig:nonce:", timeout_s: float = 0.5
    ) -> None:
        if not isinstance(prefix, str):
            raise InvalidInput("prefix must be a str")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < 3600:
            raise InvalidInput("timeout_s must be a number of seconds in (0, 3600)")
        self._client = client
        self._prefix = prefix
        self._timeout = float(timeout_s)

    async def claim(self, key: str, ttl_s: int) -> bool:
        _check_ttl(ttl_s)
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        try:
            async with asyncio.timeout(self._timeout):
                result = await self._client.set(self._prefix + key, b"1", nx=True, ex=ttl_s)
        except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as exc:
            raise NonceStoreUnavailable(
                f"nonce store: Redis unreachable or too slow ({type(exc).__name__}: {exc})"
            ) from exc
        return bool(result)
