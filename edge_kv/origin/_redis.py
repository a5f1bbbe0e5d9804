"""How every part of ``edge_kv.origin`` talks to Redis: bounded, fast to fail, typed.

Limiters, locks, fenced writes, the idempotency store, consumer de-duplication and the
Redis-shared circuit breaker all send their commands through :func:`bounded` (any
command) or :func:`run_script` (a :class:`~edge_kv.origin._scripts.LuaScript`):

* **Bounded wait.** Each call runs under :func:`asyncio.timeout`, whatever socket
  timeouts the caller's client has, so a dead or SIGSTOPped server costs at most the
  caller's timeout.
* **Fast failure.** redis-py retries a failed connection on its own, with backoff:
  ``redis.asyncio.Redis(host=..., port=...)`` defaults to 3 retries with 1-10 s
  exponential backoff, so a refused connection used to wait out the whole timeout and
  surface as a timeout. :func:`prepare` (called by every component on the client it is
  given) wraps the client's ``Retry`` so that *inside an edge_kv call* it makes one
  attempt and no backoff; the client's other users keep its configured retries. A
  refused connection then fails in about a millisecond on loopback. One attempt is also
  the safe choice for our scripts: a retried ``EVALSHA`` after a lost reply could apply a
  non-idempotent script (a limiter hit, a token ``INCR``) twice.
* **One error type.** Transport failures (refused, reset, timed out, cluster down or
  unreachable) become the caller's subclass of :class:`edge_kv.core.errors.Unavailable`.
* **Auto-pipelining.** With ``batched=True`` (the limiters', locks' and Redlock's
  default) :func:`run_script` sends the script through the client's
  :mod:`~edge_kv.origin._pipeline` transport: the calls of one event-loop tick go out in
  one write on one dedicated connection, one timer bounds each batch, and the same
  errors come out (a refused or broken connection fails at once, typed).
* **Redis Cluster.** ``redis.asyncio.cluster.RedisCluster`` works wherever
  ``redis.asyncio.Redis`` does. A script's keys must hash to one slot; every key the
  library builds itself shares a ``{hash tag}`` by construction, and keys chosen by the
  user that do not are refused *before* anything is sent with :class:`CrossSlotKeys`
  (an :class:`~edge_kv.core.errors.InvalidInput`, so a ``ValueError``), whose message
  says which hash tag to use.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.crc import key_slot
from redis.exceptions import ClusterError, ReadOnlyError, RedisClusterException, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from edge_kv.core.errors import InvalidInput, Unavailable
from edge_kv.origin import _pipeline
from edge_kv.origin._scripts import ArgT, KeyT, LuaScript

T = TypeVar("T")

# "The server did not answer" (as opposed to a script error or a bad argument):
# refused/reset connections, timeouts, a cluster that is down, failing over or cannot
# be reached (RedisClusterException: no reachable startup node, slot not covered).
UNREACHABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterError,
    TryAgainError,
    ReadOnlyError,
    RedisClusterException,
    OSError,
    TimeoutError,
)

_FAST_FAIL: contextvars.ContextVar[bool] = contextvars.ContextVar("edge_kv_fast_fail", default=False)


class CrossSlotKeys(InvalidInput):
    """Keys that one atomic operation must touch together hash to different Redis
    Cluster slots. Nothing was sent; give the keys a common ``{hash tag}``."""

    code = "cross_slot_keys"


class _FastFailRetry(Retry):
    """The client's own :class:`Retry`, except inside an edge_kv call: one attempt.

    Outside :func:`fast_fail` it behaves exactly like the ``Retry`` it was made from.
    """

    __hash__ = Retry.__hash__

    @classmethod
    def wrap(cls, retry: Retry) -> _FastFailRetry:
        return cls(retry._backoff, retry._retries, retry._supported_errors)

    def get_retries(self) -> int:
        # RedisCluster reads the count once per command and retries that many times.
        return 0 if _FAST_FAIL.get() else super().get_retries()

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        if not _FAST_FAIL.get():
            return await super().call_with_retry(do, fail, is_retryable, with_failure_count)
        try:
            return await do()
        except self._supported_errors as error:
            # Let the client clean up (disconnect) as it would before a retry, then stop.
            if with_failure_count:
                await fail(error, 1)
            else:
                await fail(error)
            raise


def prepare(client: Any) -> Any:
    """Make ``client`` fail fast inside edge_kv calls (see the module docstring); returns it.

    Idempotent. A client without retries, or with a custom ``Retry`` subclass, is left
    as it is (it then fails as fast as its own configuration allows).
    """
    if isinstance(client, RedisCluster):
        retry = client.retry
        if type(retry) is Retry:
            client.set_retry(_FastFailRetry.wrap(retry))
        return client
    get_retry = getattr(client, "get_retry", None)
    set_retry = getattr(client, "set_retry", None)
    if get_retry is not None and set_retry is not None:
        retry = get_retry()
        if type(retry) is Retry:
            set_retry(_FastFailRetry.wrap(retry))
    return client


@contextlib.contextmanager
def fast_fail() -> Iterator[None]:
    """Within this block (and tasks created in it) prepared clients make one attempt."""
    token = _FAST_FAIL.set(True)
    try:
        yield
    finally:
        _FAST_FAIL.reset(token)


def describe(exc: BaseException) -> str:
    """``TimeoutError`` or ``ConnectionError: Error 111 connecting ...`` for messages."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def bounded(
    aw: Awaitable[T],
    limit_s: float,
    what: str,
    unavailable: type[Unavailable] = Unavailable,
) -> T:
    """Await ``aw`` for at most ``limit_s`` seconds, failing fast on a refused connection.

    Transport failures (:data:`UNREACHABLE`) raise ``unavailable``; other errors (a
    script error, a wrong type) propagate unchanged.
    """
    token = _FAST_FAIL.set(True)  # fast_fail() inlined: this is every call's hot path
    try:
        async with asyncio.timeout(limit_s):
            return await aw
    except UNREACHABLE as exc:
        raise unavailable(f"{what}: Redis unreachable or too slow ({describe(exc)})") from exc
    finally:
        _FAST_FAIL.reset(token)


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def slot(key: KeyT) -> int:
    """The Redis Cluster hash slot of ``key`` (its ``{hash tag}`` if it has one)."""
    return key_slot(key.encode("utf-8") if isinstance(key, str) else key)


def check_same_slot(client: Any, keys: Sequence[KeyT], what: str) -> None:
    """On a Redis Cluster client, raise :class:`CrossSlotKeys` unless ``keys`` share a slot."""
    if len(keys) < 2 or not is_cluster(client):
        return
    if len({slot(k) for k in keys}) > 1:
        shown = ", ".join(repr(k) for k in keys)
        raise CrossSlotKeys(
            f"{what}: on Redis Cluster the keys {shown} must hash to one slot; "
            "put the same {hash tag} in each of them (only the part between the first "
            "'{' and the next '}' is hashed)"
        )


async def run_script(
    sc: LuaScript,
    client: Any,
    keys: Sequence[KeyT],
    args: Sequence[ArgT],
    limit_s: float,
    what: str,
    unavailable: type[Unavailable] = Unavailable,
    batched: bool = False,
) -> Any:
    """Run ``sc`` on ``client`` (EVALSHA, EVAL on NOSCRIPT) as one bounded call.

    ``batched``: through the client's auto-pipelined transport (:func:`script_future`),
    same bound and errors, one timer per batch instead of one per call.
    """
    check_same_slot(client, keys, what)
    if batched:
        fut = script_future(sc, client, keys, args, limit_s)
        if fut is not None:
            try:
                return await fut
            except UNREACHABLE as exc:
                raise unavailable(f"{what}: Redis unreachable or too slow ({describe(exc)})") from exc
    return await bounded(sc.run(client, keys, args), limit_s, what, unavailable)


def transport(client: Any) -> _pipeline.AutoPipeline | _pipeline.ClusterTransport | None:
    """``client``'s auto-pipelined transport on the running loop (``None``: not a
    redis-py asyncio client, use the unbatched path)."""
    return _pipeline.transport(client, fast_fail)


def script_future(
    sc: LuaScript, client: Any, keys: Sequence[KeyT], args: Sequence[ArgT], limit_s: float
) -> asyncio.Future[Any] | None:
    """Queue ``sc`` on ``client``'s transport: a future bounded by ``limit_s`` (it fails
    with a transport error of :data:`UNREACHABLE` after it), or ``None`` when the call
    must take the unbatched path (not a redis-py asyncio client; a cluster client without
    a slot map yet). Check the keys' slot first (:func:`check_same_slot`)."""
    t = _pipeline.transport(client, fast_fail)
    return None if t is None else t.script(sc, keys, args, limit_s)


async def fan_out(calls: Sequence[Awaitable[T]], limit_s: float) -> list[T | None]:
    """Run ``calls`` concurrently under ONE ``limit_s`` timer (Redlock's per-node round).

    Returns each call's result, or ``None`` for a call that did not finish in time or
    failed with a transport error; any other error is raised. Prepared clients fail fast
    on refused connections inside the calls.
    """
    with fast_fail():  # tasks copy the context when they are created
        tasks = [asyncio.ensure_future(c) for c in calls]
    if limit_s <= 0:  # no time left: nothing is sent
        for t in tasks:
            t.cancel()
        return [None] * len(tasks)
    try:
        _, pending = await asyncio.wait(tasks, timeout=limit_s)
    except BaseException:
        for t in tasks:
            t.cancel()
        raise
    for t in pending:
        t.cancel()
    replies: list[T | None] = []
    error: BaseException | None = None
    for t in tasks:
        if t in pending:
            replies.append(None)
            continue
        exc = t.exception()
        if exc is None:
            replies.append(t.result())
        elif isinstance(exc, UNREACHABLE):
            replies.append(None)
        else:
            error = error or exc
            replies.append(None)
    if error is not None:
        raise error
    return replies


# Clean-up calls still running after their caller stopped waiting (see finish_or_detach).
_detached: set[asyncio.Future[Any]] = set()


def _forget(fut: asyncio.Future[Any]) -> None:
    _detached.discard(fut)
    if not fut.cancelled():
        fut.exception()  # retrieved: a clean-up that failed is not worth a warning


async def wait_detached() -> None:
    """Wait for the clean-up calls still running in the background on this event loop
    (see :func:`finish_or_detach`). Call it before closing the clients they use: a
    clean-up that runs on after its client was closed opens a new connection, which
    then nobody closes."""
    loop = asyncio.get_running_loop()
    pending = [f for f in _detached if f.get_loop() is loop]
    if pending:
        await asyncio.wait(pending)


async def finish_or_detach(aw: Awaitable[Any], wait_s: float | None) -> None:
    """Wait up to ``wait_s`` seconds (``None``: no limit) for a clean-up call (e.g. undoing
    a failed Redlock attempt); if it is not done by then, let it finish in the background.
    The call must bound itself (it runs under its own timeout). Its errors are dropped."""
    with fast_fail():
        fut = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({fut}, timeout=None if wait_s is None else max(0.0, wait_s))
    if fut in done:
        _forget(fut)
        return
    _detached.add(fut)
    fut.add_done_callback(_forget)
