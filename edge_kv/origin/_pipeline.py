"""Auto-pipelined Redis transport: the script calls of one event-loop tick, one write.

On loopback a Redis-backed decision is bound by client CPU, most of it redis-py's
per-command machinery (pool checkout, retry wrapper, per-call timer, per-reply parser
coroutines). :class:`AutoPipeline` takes that out of the hot path for the library's Lua
scripts (limiters, locks, Redlock nodes; available to any :func:`_redis.run_script`
caller with ``batched=True``):

* **Batching per tick.** :meth:`AutoPipeline.script` packs the command and queues it;
  the first call of a tick schedules one flush for every pipeline of the loop
  (``loop.call_soon``), which writes each pipeline's commands of that tick with one
  ``transport.write`` on its dedicated connection. Replies are parsed in the
  connection's protocol (``data_received``: hiredis when installed, else a small RESP
  parser), which resolves the callers' futures in order: no reader task to wake.
* **Bounded waits, one timer per tick.** Calls of one tick with the same timeout share
  one ``loop.call_later`` timer, on every pipeline of the loop (a Redlock round is one
  timer); it is cancelled once all of them are answered, so the loop's timer heap holds
  only batches in flight. When it fires, their unresolved futures fail with redis-py's
  ``TimeoutError``. If the oldest request in flight on a connection was sent in that
  tick or before it (the server sat on it for a whole timeout), the connection is
  considered dead: it is closed and everything else in flight on it fails at once.
* **Typed fail-fast, recovery.** A refused connection fails every queued call at once
  (one connect attempt, no backoff); a reset or closed connection fails what is in flight
  on it (``ConnectionError``); the next call reconnects. Callers turn these into their
  typed :class:`~edge_kv.core.errors.Unavailable` (``_redis.UNREACHABLE``). Nothing is
  retried after it may have run: a reply lost with its connection is an error, never a
  second ``EVALSHA``.
* **EVALSHA, EVAL on NOSCRIPT.** A ``NOSCRIPT`` reply (nothing ran) re-queues the call;
  the first re-sent call of a script in a write is an ``EVAL`` (which also reloads the
  cache), the ones after it in that write stay ``EVALSHA``. Re-sent calls keep their
  relative order.
* **Redis Cluster.** :class:`ClusterTransport` keeps one :class:`AutoPipeline` per node
  and routes each call by its first key's slot (redis-py's slot map). ``MOVED``,
  ``ASK``, ``TRYAGAIN`` and ``CLUSTERDOWN`` (nothing ran) are delegated to redis-py's
  cluster client, which follows the redirection and refreshes its slot map; while the
  client has no slot map yet (first call) calls take the unbatched path.

The connection comes from the client's own pool (or cluster node), so it uses the
client's settings (auth, TLS, database, RESP version, decoding) and is closed by the
client's ``aclose()``; it stays checked out for the transport's lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio.client import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from edge_kv.origin._scripts import ArgT, KeyT, LuaScript

_hiredis: Any
try:  # redis-py's optional C parser (the `redis` extra installs it); the fallback below parses the same replies
    _hiredis = importlib.import_module("hiredis")
except ImportError:  # pragma: no cover - depends on the environment
    _hiredis = None

__all__ = ["AutoPipeline", "ClusterTransport", "transport"]

_ATTR = "_edge_kv_transport"
_MISSING = object()  # "no complete reply yet"
_REDIRECT = (MovedError, AskError, TryAgainError, ClusterDownError)


class _ReplyError(Exception):
    """An error reply (``-ERR ...``) as the parser hands it over."""


def _error(message: str) -> ResponseError:
    """redis-py's exception for an error reply (``NOSCRIPT`` -> ``NoScriptError``, ...)."""
    from redis._parsers.base import BaseParser  # the table redis-py's own parsers use

    code = message.split(" ")[0]
    cls: Any = BaseParser.EXCEPTION_CLASSES.get(code)
    if cls is None:
        return ResponseError(message)
    rest = message[len(code) + 1 :]
    if isinstance(cls, dict):
        cls = cls.get(rest, ResponseError)
    try:
        exc: ResponseError = cls(rest, status_code=code)
    except TypeError:  # redis-py 5: no status_code
        exc = cls(rest)
    return exc


class _Incomplete(Exception):
    pass


class _PyReader:
    """RESP2/RESP3 replies from a byte stream, for when hiredis is not installed
    (the interface of ``hiredis.Reader``: ``feed`` bytes, ``gets`` a reply or ``_MISSING``)."""

    def __init__(self, encoding: str | None, errors: str) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._encoding = encoding
        self._errors = errors

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def gets(self) -> Any:
        try:
            value, self._pos = self._parse(self._pos)
        except _Incomplete:
            return _MISSING
        return value

    def _text(self, raw: bytes) -> Any:
        return raw.decode(self._encoding, self._errors) if self._encoding else raw

    def _parse(self, pos: int) -> tuple[Any, int]:
        buf = self._buf
        end = buf.find(b"\r\n", pos)
        if end < 0:
            raise _Incomplete
        kind, line, pos = buf[pos], bytes(buf[pos + 1 : end]), end + 2
        if kind == 0x2B:  # + simple string
            return self._text(line), pos
        if kind == 0x2D:  # - error
            return _ReplyError(line.decode("utf-8", "replace")), pos
        if kind in (0x3A, 0x28):  # : integer, ( big number
            return int(line), pos
        if kind in (0x24, 0x3D, 0x21):  # $ bulk, = verbatim, ! blob error
            n = int(line)
            if n < 0:
                return None, pos
            if len(buf) < pos + n + 2:
                raise _Incomplete
            raw = bytes(buf[pos : pos + n])
            pos += n + 2
            if kind == 0x21:
                return _ReplyError(raw.decode("utf-8", "replace")), pos
            if kind == 0x3D:
                raw = raw[4:]  # "txt:"
            return self._text(raw), pos
        if kind in (0x2A, 0x7E, 0x3E, 0x25, 0x7C):  # * array, ~ set, > push, % map, | attribute
            n = int(line)
            if n < 0:
                return None, pos
            count = 2 * n if kind in (0x25, 0x7C) else n
            items = []
            for _ in range(count):
                item, pos = self._parse(pos)
                items.append(item)
            if kind == 0x7C:  # attributes precede the reply they describe
                return self._parse(pos)
            if kind == 0x25:
                return dict(zip(items[::2], items[1::2], strict=True)), pos
            return items, pos
        if kind == 0x5F:  # _ null
            return None, pos
        if kind == 0x23:  # # boolean
            return line == b"t", pos
        if kind == 0x2C:  # , double
            return float(line), pos
        raise RedisConnectionError(f"unexpected reply type {chr(kind)!r} from Redis")


def _reader(encoding: str | None, errors: str) -> Any:
    if _hiredis is not None:
        kwargs: dict[str, Any] = {"replyError": _ReplyError, "notEnoughData": _MISSING}
        if encoding:
            kwargs["encoding"] = encoding
            kwargs["errors"] = errors
        return _hiredis.Reader(**kwargs)
    return _PyReader(encoding, errors)


class _Group:
    """The calls of one tick with one timeout, on every pipeline of the loop: one timer.

    ``pending`` counts the calls the pipelines still track; when it reaches 0 (the
    steady state: every reply arrived) the timer is cancelled, so the loop's timer heap
    holds only batches still in flight."""

    __slots__ = ("born", "calls", "handle", "pending", "timeout")

    def __init__(self, born: float, timeout: float) -> None:
        self.born = born  # creation time of the timer bounding these calls
        self.timeout = timeout
        self.calls: list[_Call] = []
        self.pending = 0
        self.handle: asyncio.TimerHandle | None = None

    def expire(self) -> None:
        self.handle = None
        error: BaseException | None = None
        pipes: dict[int, AutoPipeline] = {}
        for call in self.calls:
            pipes[id(call.pipe)] = call.pipe
            if not call.fut.done():
                error = error or RedisTimeoutError(f"Redis did not answer within {self.timeout:g} s")
                call.fut.set_exception(error)
        for pipe in pipes.values():
            pipe._stalled(self.born, self.timeout)


class _Tick:
    """Per event loop: the pipelines with calls queued in this tick (one ``call_soon``
    flushes them all) and this tick's timer groups."""

    __slots__ = ("dirty", "groups", "loop", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.dirty: list[AutoPipeline] = []
        self.groups: dict[float, _Group] = {}
        self.scheduled = False

    def group(self, timeout: float) -> _Group:
        group = self.groups.get(timeout)
        if group is None:
            loop = self.loop
            group = self.groups[timeout] = _Group(loop.time(), timeout)
            group.handle = loop.call_later(timeout, group.expire)
            self.schedule()
        return group

    def add(self, pipe: AutoPipeline) -> None:
        self.dirty.append(pipe)
        self.schedule()

    def schedule(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.run)

    def run(self) -> None:
        self.scheduled = False
        if self.groups:
            self.groups = {}
        dirty, self.dirty = self.dirty, []
        for pipe in dirty:
            pipe._flush()


_ticks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Tick] = weakref.WeakKeyDictionary()


def _tick(loop: asyncio.AbstractEventLoop) -> _Tick:
    tick = _ticks.get(loop)
    if tick is None:
        tick = _ticks[loop] = _Tick(loop)
    return tick


def _settle(call: _Call) -> None:
    """The pipeline is done with ``call`` (answered, failed or dropped)."""
    group = call.group
    group.pending -= 1
    if not group.pending and group.handle is not None:
        group.handle.cancel()
        group.handle = None


class _Call:
    """One queued or in-flight command and the future its caller awaits."""

    __slots__ = ("args", "fut", "group", "keys", "packed", "pipe", "sc", "tries")

    def __init__(
        self,
        pipe: AutoPipeline,
        fut: asyncio.Future[Any],
        packed: bytes,
        sc: LuaScript | None,
        keys: Any,
        args: Any,
        group: _Group,
    ) -> None:
        self.pipe = pipe
        self.fut = fut
        self.packed = packed
        self.sc = sc
        self.keys = keys
        self.args = args
        self.group = group  # the calls sharing this call's timer
        self.tries = 0


class _Protocol(asyncio.Protocol):
    """Replaces the connection's stream protocol once redis-py has connected it: each
    ``data_received`` parses the replies and resolves their futures right there (no
    reader task to wake). The stream protocol is still told when the connection is lost,
    so redis-py's ``disconnect()`` (which waits for that) completes."""

    def __init__(self, pipe: AutoPipeline, gen: int, parser: Any, stream: asyncio.BaseProtocol) -> None:
        self._pipe = pipe
        self._gen = gen
        self._parser = parser
        self._stream = stream

    def data_received(self, data: bytes) -> None:
        self._pipe._received(self._gen, self._parser, data)

    def eof_received(self) -> bool | None:
        self._pipe._lost(self._gen, RedisConnectionError("Connection closed by server."))
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._pipe._lost(
            self._gen,
            exc if exc is not None else RedisConnectionError("Connection closed by server."),
        )
        self._stream.connection_lost(exc)


class AutoPipeline:
    """One dedicated connection to one Redis server, shared by every caller on one loop.

    ``acquire`` returns the redis-py ``Connection`` to use (taken once, reconnected as
    needed); ``fast_fail`` is a context manager under which the client makes one connect
    attempt. ``redirect`` (cluster) receives calls answered ``MOVED``/``ASK``/... .
    """

    def __init__(
        self,
        acquire: Callable[[], Awaitable[Any]],
        encoder: Any,
        fast_fail: Callable[[], contextlib.AbstractContextManager[None]],
        redirect: Callable[[_Call], None] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._tick = _tick(self.loop)
        self._acquire = acquire
        self._encode = encoder.encode
        self._encoding: str | None = encoder.encoding if encoder.decode_responses else None
        self._errors: str = encoder.encoding_errors
        self._wenc: str = encoder.encoding
        self._fast_fail = fast_fail
        self._redirect = redirect
        self._conn: Any = None
        self._transport: asyncio.WriteTransport | None = None
        self._queue: list[_Call] = []
        self._inflight: deque[_Call] = deque()
        self._flush_scheduled = False
        self._connecting: asyncio.Task[None] | None = None
        self._connect_started = 0.0
        self._gen = 0
        self._headers: dict[tuple[str, int], bytes] = {}
        self.writes = 0  # batches written (round trips), for tests and benchmarks
        self.commands = 0

    # -- callers --------------------------------------------------------------------------
    def script(
        self, sc: LuaScript, keys: Sequence[KeyT], args: Sequence[ArgT], timeout: float
    ) -> asyncio.Future[Any]:
        """Queue ``EVALSHA sc`` for this tick's batch; the future is bounded by ``timeout``."""
        n = len(keys)
        size = n + len(args)
        header = self._headers.get((sc.sha, size))
        if header is None:
            header = self._headers[(sc.sha, size)] = self._pack(
                [b"EVALSHA", sc.sha.encode("ascii"), str(n).encode("ascii")], size
            )
        return self._enqueue(header + self._body(keys, args), sc, keys, args, timeout)

    def command(self, *parts: ArgT, timeout: float) -> asyncio.Future[Any]:
        """Queue any command (replies are raw, as the parser returns them)."""
        return self._enqueue(self._pack([self._bytes(p) for p in parts], 0), None, (), (), timeout)

    # -- packing --------------------------------------------------------------------------
    def _bytes(self, value: Any) -> bytes:
        return value if type(value) is bytes else bytes(self._encode(value))

    @staticmethod
    def _pack(parts: list[bytes], extra: int) -> bytes:
        out = [b"*%d\r\n" % (len(parts) + extra)]
        for p in parts:
            out.append(b"$%d\r\n%s\r\n" % (len(p), p))
        return b"".join(out)

    def _body(self, keys: Sequence[ArgT], args: Sequence[ArgT]) -> bytes:
        wenc, errors = self._wenc, self._errors
        # The common types inline; the rest (and bool: refused) as redis-py does. An int is
        # sent as redis-py sends it: repr(int).
        parts = [
            v.encode(wenc, errors)
            if type(v) is str
            else v
            if type(v) is bytes
            else b"%d" % v
            if type(v) is int
            else bytes(self._encode(v))
            for v in (*keys, *args)
        ]
        return b"".join([b"$%d\r\n%s\r\n" % (len(b), b) for b in parts])

    def _eval_packed(self, call: _Call) -> bytes:
        assert call.sc is not None
        n = len(call.keys)
        head = self._pack(
            [b"EVAL", call.sc.source.encode("utf-8"), str(n).encode("ascii")], n + len(call.args)
        )
        return head + self._body(call.keys, call.args)

    # -- queue, flush, timers -------------------------------------------------------------
    def _enqueue(
        self, packed: bytes, sc: LuaScript | None, keys: Any, args: Any, timeout: float
    ) -> asyncio.Future[Any]:
        fut = self.loop.create_future()
        if timeout <= 0:  # no time left: nothing is sent
            fut.set_exception(RedisTimeoutError("no time left to ask Redis"))
            return fut
        tick = self._tick
        group = tick.groups.get(timeout) or tick.group(timeout)
        call = _Call(self, fut, packed, sc, keys, args, group)
        group.calls.append(call)
        group.pending += 1
        self._queue.append(call)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            tick.add(self)
        return fut

    def _requeue(self, call: _Call) -> None:
        self._queue.append(call)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._tick.add(self)

    def _flush(self) -> None:
        self._flush_scheduled = False
        transport = self._transport
        if transport is None or transport.is_closing():
            if self._connecting is None and self._queue:
                self._connect_started = self.loop.time()
                self._connecting = self.loop.create_task(self._connect())
            return
        queue, self._queue = self._queue, []
        inflight = self._inflight
        if len(queue) == 1:  # one task: nothing to join
            call = queue[0]
            if call.fut.done():
                _settle(call)
            elif call.tries:
                self._write_all(transport, queue)
            else:
                inflight.append(call)
                transport.write(call.packed)
                self.writes += 1
                self.commands += 1
            return
        self._write_all(transport, queue)

    def _write_all(self, transport: asyncio.WriteTransport, queue: list[_Call]) -> None:
        chunks = []
        evaled: set[str] = set()
        inflight = self._inflight
        for call in queue:
            if call.fut.done():  # timed out or cancelled before it was sent: not sent
                _settle(call)
                continue
            if call.tries and call.sc is not None and (call.tries > 1 or call.sc.sha not in evaled):
                evaled.add(call.sc.sha)
                chunks.append(self._eval_packed(call))
            else:
                chunks.append(call.packed)
            inflight.append(call)
        if chunks:
            transport.write(b"".join(chunks))
            self.writes += 1
            self.commands += len(chunks)

    def _stalled(self, born: float, timeout: float) -> None:
        """A timer of calls made at ``born`` fired: if the oldest request in flight is
        that old, the server sat on it for a whole timeout; drop the connection."""
        if self._inflight and self._inflight[0].group.born <= born:
            self._break(RedisTimeoutError(f"Redis did not answer for {timeout:g} s; connection dropped"))
        if self._connecting is not None and self._connect_started <= born:
            self._connecting.cancel()

    # -- connection -----------------------------------------------------------------------
    async def _connect(self) -> None:
        try:
            with self._fast_fail():
                if self._conn is None:
                    self._conn = await self._acquire()
                else:
                    await self._conn.disconnect(nowait=True)  # streams we closed ourselves
                await self._conn.connect()
            writer = self._conn._writer
            if writer is None or writer.transport.is_closing():
                raise RedisConnectionError("Redis connection closed while connecting")
        except BaseException as exc:
            self._connecting = None
            error: BaseException = exc
            if isinstance(exc, asyncio.CancelledError):
                error = RedisTimeoutError("Redis did not accept the connection in time")
            elif not isinstance(exc, Exception):
                raise
            queue, self._queue = self._queue, []
            for call in queue:
                _settle(call)
                if not call.fut.done():
                    call.fut.set_exception(error)
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.disconnect(nowait=True)
            return
        self._connecting = None
        self._gen += 1
        transport = writer.transport
        stream = transport.get_protocol()
        transport.set_protocol(_Protocol(self, self._gen, _reader(self._encoding, self._errors), stream))
        self._transport = transport
        self._flush()

    def _break(self, exc: BaseException) -> None:
        """Fail every call in flight on the current connection and close it; the next
        call reconnects."""
        self._gen += 1
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        inflight, self._inflight = self._inflight, deque()
        error = exc if isinstance(exc, (RedisConnectionError, RedisTimeoutError)) else None
        for call in inflight:
            _settle(call)
            if not call.fut.done():
                error = error or RedisConnectionError(f"Redis connection lost ({type(exc).__name__}: {exc})")
                call.fut.set_exception(error)
        if self._queue and not self._flush_scheduled:
            self._flush_scheduled = True
            self._tick.add(self)

    def _lost(self, gen: int, exc: BaseException) -> None:
        if gen == self._gen:
            self._break(exc)

    def _received(self, gen: int, parser: Any, data: bytes) -> None:
        if gen != self._gen:
            return
        inflight = self._inflight
        try:
            parser.feed(data)
            while True:
                reply = parser.gets()
                if reply is _MISSING:
                    return
                call = inflight.popleft()
                if type(reply) is _ReplyError:
                    self._failed(call, _error(str(reply)))
                    continue
                fut = call.fut
                if not fut.done():
                    fut.set_result(reply)
                group = call.group  # _settle(call), inlined: every reply passes here
                group.pending -= 1
                if not group.pending and group.handle is not None:
                    group.handle.cancel()
                    group.handle = None
        except Exception as exc:  # a reply nobody asked for, a protocol error: start over
            if gen == self._gen:
                self._break(exc)

    def _failed(self, call: _Call, exc: ResponseError) -> None:
        if call.fut.done():
            _settle(call)
            return
        if isinstance(exc, NoScriptError) and call.sc is not None and call.tries < 2:
            call.tries += 1  # nothing ran: send it again, as EVAL (see _flush)
            self._requeue(call)
        elif self._redirect is not None and isinstance(exc, _REDIRECT) and call.sc is not None:
            self._redirect(call)  # nothing ran: the cluster client follows the redirection
        else:
            _settle(call)
            call.fut.set_exception(exc)


class ClusterTransport:
    """One :class:`AutoPipeline` per Redis Cluster node, calls routed by slot."""

    def __init__(
        self, client: RedisCluster, fast_fail: Callable[[], contextlib.AbstractContextManager[None]]
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._client = client
        self._fast_fail = fast_fail
        self._pipes: dict[str, tuple[Any, AutoPipeline]] = {}
        self._delegated: set[asyncio.Task[Any]] = set()

    def pipeline_for(self, key: KeyT) -> AutoPipeline | None:
        try:
            node = self._client.get_node_from_key(key)  # type: ignore[arg-type]
        except Exception:
            return None
        if node is None:
            return None
        entry = self._pipes.get(node.name)
        if entry is not None and entry[0] is node:
            return entry[1]

        async def acquire() -> Any:
            return node.acquire_connection()

        pipe = AutoPipeline(acquire, self._client.get_encoder(), self._fast_fail, self._delegate)
        self._pipes[node.name] = (node, pipe)
        return pipe

    def script(
        self, sc: LuaScript, keys: Sequence[KeyT], args: Sequence[ArgT], timeout: float
    ) -> asyncio.Future[Any] | None:
        pipe = self.pipeline_for(keys[0]) if keys else None
        return None if pipe is None else pipe.script(sc, keys, args, timeout)

    def _delegate(self, call: _Call) -> None:
        assert call.sc is not None
        with self._fast_fail():
            task = self.loop.create_task(call.sc.run(self._client, call.keys, call.args))
        self._delegated.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._delegated.discard(t)
            if t.cancelled():
                if not call.fut.done():
                    call.fut.cancel()
                return
            exc = t.exception()
            if call.fut.done():
                return
            if exc is not None:
                call.fut.set_exception(exc)
            else:
                call.fut.set_result(t.result())

        task.add_done_callback(done)
        # The caller's timer still bounds the caller; stop the delegated call with it.
        call.fut.add_done_callback(lambda _: task.cancel() if not task.done() else None)


def _pool_acquire(client: Redis) -> Callable[[], Awaitable[Any]]:
    pool: Any = client.connection_pool
    param = inspect.signature(pool.get_connection).parameters.get("command_name")
    needs_name = param is not None and param.default is inspect.Parameter.empty  # redis-py 5

    async def acquire() -> Any:
        if needs_name:
            return await pool.get_connection("EVALSHA")
        return await pool.get_connection()

    return acquire


def transport(
    client: Any, fast_fail: Callable[[], contextlib.AbstractContextManager[None]]
) -> AutoPipeline | ClusterTransport | None:
    """The client's transport on the running loop (made on first use); ``None`` for a
    client that is neither ``redis.asyncio.Redis`` nor ``RedisCluster``."""
    t: AutoPipeline | ClusterTransport | None = client.__dict__.get(_ATTR)
    if t is not None and t.loop is asyncio.get_running_loop():
        return t
    if isinstance(client, RedisCluster):
        t = ClusterTransport(client, fast_fail)
    elif isinstance(client, Redis) and client.connection_pool is not None:
        c: Any = client
        t = AutoPipeline(_pool_acquire(client), c.get_encoder(), fast_fail)
    else:
        return None
    setattr(client, _ATTR, t)
    return t
