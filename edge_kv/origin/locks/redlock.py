"""Redlock over N independent Redis nodes, with a quorum-safe fencing token.

Acquire (one attempt):

1. Run the lock's acquire script on every node concurrently (one ``op_timeout`` timer
   for the round): ``SET key owner NX PX ttl`` and, where granted, ``INCR`` of that
   node's fencing counter. Stop waiting once a quorum has granted with one and the same
   counter value > 1 (the steady state: the other answers cannot change the token);
   otherwise wait for every node's answer or the timer. Calls still running go on in the
   background (tracked for :func:`_redis.wait_detached`, cancelled by the round's timer);
   a late grant is released there unless the lock still holds that lease.
2. Fewer than ``quorum(N) = N // 2 + 1`` grants: release on every node, fail.
3. ``token = max`` of the counters returned by the granting nodes (and of 1 + the
   counter of any node that refused, which may be ahead). If fewer than a
   quorum of them already returned ``token``, raise the lagging granting nodes' counters
   to ``token`` (one more concurrent round, only on nodes where we still hold the key)
   and require that a quorum now has counter >= ``token``.
4. ``validity = ttl - elapsed - drift(ttl)`` (:func:`edge_kv.core.lease.redlock_validity_ms`);
   non-positive: release everywhere, fail. Otherwise the lease is ours until then.

In steady state every node has the same counter, so step 3 is skipped and acquisition
is one concurrent round trip to the fastest quorum. Release returns once a quorum has
released (the rest run on in the background). Why tokens are strictly increasing, also
when returning at quorum, and what breaks it, is in docs/origin-locks.md ("Redlock
fencing tokens").

Time bound: ``acquire(blocking_timeout=b)`` returns or raises within ``b + op_timeout``.
A refused connection fails at once (the nodes' clients make one attempt inside edge_kv
calls); an attempt starts only before ``b``; its rounds after the first share what is
left of one ``op_timeout`` past ``b``, and undoing a failed attempt on nodes that do not
answer in that time continues in the background (bounded by ``op_timeout``; a lease
left behind expires by its TTL).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from edge_kv.core.lease import DEFAULT_DRIFT_FACTOR, quorum
from edge_kv.origin import _redis
from edge_kv.origin._scripts import LuaScript
from edge_kv.origin.locks._base import (
    DEFAULT_BLOCKING_TIMEOUT_S,
    DEFAULT_RENEW_FRACTION,
    DEFAULT_TTL_MS,
    Attempt,
    LeaseLock,
)
from edge_kv.origin.locks._io import run
from edge_kv.origin.locks._lua import ACQUIRE, EXTEND, RAISE_COUNTER, RELEASE, acquire_reply
from edge_kv.origin.locks.errors import LockNotOwned, LockUnavailable

DEFAULT_REDLOCK_NAMESPACE = "edge_kv:redlock"
DEFAULT_REDLOCK_OP_TIMEOUT_S = 0.5
DEFAULT_REDLOCK_RETRY_DELAY_MS = (20, 100)


class Redlock(LeaseLock):
    """``async with Redlock([r1, r2, r3, r4, r5], "job:7", ttl_ms=10_000) as lock: lock.token``

    ``clients`` are asyncio clients of *independent* Redis deployments (not replicas of
    one another): ``redis.asyncio.Redis``, or ``RedisCluster`` for a node that is itself
    a cluster (a lock's keys share one slot). ``op_timeout`` bounds each round of calls
    and should be small next to ``ttl_ms``: a slow node must not eat the validity. Each
    node's calls go through that client's auto-pipelined transport
    (:mod:`edge_kv.origin._pipeline`: no task per node call, one timer per round);
    ``autopipeline=False`` uses redis-py's pools instead. Other options as in
    :class:`~edge_kv.origin.locks.redis_lock.RedisLock`.
    """

    def __init__(
        self,
        clients: Sequence[Any],
        name: str,
        *,
        ttl_ms: int = DEFAULT_TTL_MS,
        blocking_timeout: float | None = DEFAULT_BLOCKING_TIMEOUT_S,
        retry_delay_ms: tuple[int, int] = DEFAULT_REDLOCK_RETRY_DELAY_MS,
        auto_renew: bool = False,
        renew_fraction: float = DEFAULT_RENEW_FRACTION,
        drift_factor: float = DEFAULT_DRIFT_FACTOR,
        op_timeout: float = DEFAULT_REDLOCK_OP_TIMEOUT_S,
        namespace: str = DEFAULT_REDLOCK_NAMESPACE,
        autopipeline: bool = True,
    ) -> None:
        clients = list(clients)
        if not clients:
            raise ValueError("Redlock needs at least one Redis client")
        if len({id(c) for c in clients}) != len(clients):
            raise ValueError("Redlock clients must be distinct (one per independent Redis server)")
        super().__init__(
            name,
            ttl_ms=ttl_ms,
            blocking_timeout=blocking_timeout,
            retry_delay_ms=retry_delay_ms,
            auto_renew=auto_renew,
            renew_fraction=renew_fraction,
            drift_factor=drift_factor,
            op_timeout=op_timeout,
            namespace=namespace,
        )
        self.clients = [_redis.prepare(c) for c in clients]
        self.quorum = quorum(len(clients))
        self.autopipeline = bool(autopipeline)
        self._calls: list[asyncio.Future[Any]] = []  # the node calls of the last round
        # The last release round's owner and node calls (see _late_grants).
        self._released: tuple[str, list[asyncio.Future[Any]]] = ("", [])

    def _call(
        self, sc: LuaScript, client: Any, keys: list[str], args: Sequence[str | int], limit_s: float
    ) -> Awaitable[Any]:
        """One node's script call: a future of its transport (bounded by ``limit_s``) or,
        without auto-pipelining, a coroutine for the caller's timer."""
        if self.autopipeline:
            fut = _redis.script_future(sc, client, keys, args, limit_s)
            if fut is not None:
                return fut
        return sc.run(client, keys, args)

    async def _fan_out(
        self, sc: LuaScript, keys: list[str], args: list[str | int], limit_s: float | None = None
    ) -> list[Any]:
        """Run ``sc`` on every node at once under ONE timer (default ``op_timeout``).

        Returns each node's reply, or ``None`` for a node that did not answer in time or
        is unreachable (a refused connection answers at once). One timer for all nodes
        (rather than one per call) is cheaper, and a slow node still cannot delay the
        answer past the limit.
        """
        limit = self.op_timeout if limit_s is None else limit_s
        for client in self.clients:
            _redis.check_same_slot(client, keys, f"redlock {self.name!r}")
        return await _redis.fan_out([self._call(sc, c, keys, args, limit) for c in self.clients], limit)

    async def _raise_on_node(self, client: Any, owner: str, token: int, limit_s: float) -> bool:
        try:
            ok = await run(
                RAISE_COUNTER,
                client,
                [self.key, self.counter_key],
                [owner, token],
                limit_s,
                "raise",
                self.autopipeline,
            )
        except LockUnavailable:
            return False
        return bool(ok)

    async def _round(
        self,
        sc: LuaScript,
        keys: list[str],
        args: list[str | int],
        limit_s: float,
        enough: Callable[[list[Any]], bool],
        owner: str | None = None,
    ) -> list[Any]:
        """Run ``sc`` on every node at once under one ``limit_s`` timer and stop waiting
        as soon as ``enough(replies)`` holds (``None`` = no answer yet) or every node has
        answered or the timer ran out.

        Returns the replies so far (``None`` also for unreachable or timed-out nodes), and
        the node calls themselves. Node calls still running finish in the background (under
        what is left of the timer: transport futures are bounded by their batch's timer),
        tracked in :data:`_redis._detached` so that :func:`_redis.wait_detached` waits for
        them; no task is made for them. ``owner``: this is an acquire round; a grant that
        arrives after the round stopped waiting is released unless this lock still holds
        that lease once every node has answered, or the lock's own release already deleted
        it on that node (see :meth:`_late_grants`). A non-transport error of a node that
        answered is raised (the others are cancelled).
        """
        clients = self.clients
        for client in clients:
            _redis.check_same_slot(client, keys, f"redlock {self.name!r}")
        n = len(clients)
        replies: list[Any] = [None] * n
        if limit_s <= 0:  # no time left: nothing is sent
            self._calls = []
            return replies
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        calls: list[asyncio.Future[Any] | None] = [None] * n
        if self.autopipeline:  # transport futures: each bounded by its batch's timer
            calls = [_redis.script_future(sc, c, keys, args, limit_s) for c in clients]
        bounded_by_transport = None not in calls
        if not bounded_by_transport:
            with _redis.fast_fail():  # tasks copy the context when they are created
                calls = [
                    f if f is not None else asyncio.ensure_future(sc.run(c, keys, args))
                    for f, c in zip(calls, clients, strict=True)
                ]
        futs = cast(list[asyncio.Future[Any]], calls)
        reached: asyncio.Future[None] = loop.create_future()
        error: list[BaseException] = []
        state = [n, 0]  # calls left; 1 once the caller took its replies
        late: list[int] = []
        rest: list[asyncio.Future[None]] = []

        def on_done(i: int, fut: asyncio.Future[Any]) -> None:
            state[0] -= 1
            reply = None
            if not fut.cancelled():
                exc = fut.exception()
                if exc is None:
                    reply = fut.result()
                elif not isinstance(exc, _redis.UNREACHABLE):
                    error.append(exc)
            if not state[1]:
                replies[i] = reply
                if not reached.done() and (state[0] == 0 or error or enough(replies)):
                    reached.set_result(None)
                return
            if owner is not None and reply is not None and acquire_reply(reply)[0] > 0:
                late.append(i)
            if state[0] == 0:
                if late and owner is not None:
                    self._late_grants(owner, late)
                if rest and not rest[0].done():
                    rest[0].set_result(None)

        for i, fut in enumerate(futs):
            fut.add_done_callback(functools.partial(on_done, i))
        self._calls = futs
        try:
            if bounded_by_transport:
                await reached
            else:
                await _redis.bounded(reached, limit_s, f"redlock {self.name!r}", LockUnavailable)
        except LockUnavailable:
            pass  # the round's time is up: nodes that have not answered count as None
        except BaseException:
            for fut in futs:
                fut.cancel()
            raise
        state[1] = 1
        seen = list(replies)
        if state[0] == 0:
            return seen
        if error or deadline - loop.time() <= 0:
            for fut in futs:
                fut.cancel()  # their callbacks still run (as cancelled)
        if error:
            raise error[0]
        # The rest finish in the background; wait_detached() waits for them.
        done = loop.create_future()
        rest.append(done)
        _redis._detached.add(done)
        done.add_done_callback(_redis._forget)
        return seen

    def _late_grant_after(self, owner: str, node: int, _: asyncio.Future[Any]) -> None:
        self._late_grants(owner, [node])

    def _late_grants(self, owner: str, nodes: list[int]) -> None:
        """Grants of an acquire round that arrived after it stopped waiting: release them
        unless the lock still holds that lease (its own release will), or the lock's
        release already deleted our key on that node (it answered 1 there: the grant ran
        before it, on that node's connection)."""
        if self._owner == owner:
            return
        released = self._released if self._released[0] == owner else ("", [])
        todo = []
        for i in nodes:
            rel = released[1][i] if i < len(released[1]) else None
            if rel is not None and not rel.done():  # its answer says whether it deleted the grant
                rel.add_done_callback(functools.partial(self._late_grant_after, owner, i))
            elif rel is None or rel.cancelled() or rel.exception() is not None or not rel.result():
                todo.append(i)
        if not todo:
            return
        with _redis.fast_fail():
            cleanup = asyncio.ensure_future(
                _redis.fan_out(
                    [
                        self._call(RELEASE, self.clients[i], [self.key], [owner], self.op_timeout)
                        for i in todo
                    ],
                    self.op_timeout,
                )
            )
        _redis._detached.add(cleanup)
        cleanup.add_done_callback(_redis._forget)

    def _steady_quorum(self, raw: list[Any]) -> bool:
        """A quorum granted with one and the same counter value, not a fresh counter:
        the steady state, where waiting for the other nodes cannot change the token."""
        grants = [acquire_reply(r)[0] for r in raw if r is not None]
        grants = [t for t in grants if t > 0]
        return len(grants) >= self.quorum and min(grants) == max(grants) > 1

    async def _attempt(self, owner: str, until: float) -> Attempt:
        started = time.monotonic()
        raw = await self._round(
            ACQUIRE,
            [self.key, self.counter_key],
            [owner, self.ttl_ms],
            self._budget(until),
            self._steady_quorum,
            owner,
        )
        replies = [None if r is None else acquire_reply(r) for r in raw]
        answered = sum(r is not None for r in replies)
        granted = [(i, r[0]) for i, r in enumerate(replies) if r is not None and r[0] > 0]
        if len(granted) < self.quorum:
            await self._undo(owner, until)
            pttls = [r[1] for r in replies if r is not None and r[0] == 0 and r[1] > 0]
            return Attempt(
                None,
                available=answered >= self.quorum,
                holder_pttl_ms=sorted(pttls)[len(pttls) // 2] if pttls else 0,
                detail=f"{answered} of {len(self.clients)} nodes answered, {len(granted)} granted; "
                f"quorum is {self.quorum}",
            )
        # Counters of nodes that refused (an expiring or orphaned lease) may be ahead:
        # their value may already have been handed out, so the new token must exceed it.
        refused_max = max((r[2] for r in replies if r is not None and r[0] == 0), default=0)
        token = max(max(t for _, t in granted), refused_max + 1)
        at_token = sum(t == token for _, t in granted)
        if at_token < self.quorum:
            lagging = [i for i, t in granted if t < token]
            limit = self._budget(until)
            raised = await asyncio.gather(
                *(self._raise_on_node(self.clients[i], owner, token, limit) for i in lagging)
            )
            at_token += sum(raised)
        validity = self._validity(self.ttl_ms, time.monotonic() - started)
        if at_token < self.quorum or validity <= 0:
            await self._undo(owner, until)
            return Attempt(None, detail="granted by a quorum but could not confirm token/validity in time")
        return Attempt(token, validity_ms=validity)

    async def _undo(self, owner: str, until: float) -> None:
        """Release a failed attempt on every node (compare-and-delete: safe everywhere).

        The caller waits at most until ``until``; nodes that have not answered by then
        are left to the release round, which runs on in the background for at most
        ``op_timeout`` (a lease it cannot delete expires by its TTL).
        """
        wait = None if until == float("inf") else until - time.monotonic()
        await _redis.finish_or_detach(self._release_all(owner), wait)

    async def _each(self, sc_name: str, owner: str, ttl_ms: int = 0) -> list[bool | None]:
        sc = RELEASE if sc_name == "release" else EXTEND
        args: list[str | int] = [owner] if sc_name == "release" else [owner, ttl_ms]
        return [None if r is None else bool(r) for r in await self._fan_out(sc, [self.key], args)]

    async def _release_all(self, owner: str) -> None:
        await self._each("release", owner)

    async def _extend(self, owner: str, ttl_ms: int) -> int:
        started = time.monotonic()
        results = await self._each("extend", owner, ttl_ms)
        ok = sum(r is True for r in results)
        validity = self._validity(ttl_ms, time.monotonic() - started)
        if ok >= self.quorum and validity > 0:
            return validity
        answered = sum(r is not None for r in results)
        if answered < self.quorum:
            raise LockUnavailable(
                f"extend {self.name!r}: only {answered} of {len(self.clients)} nodes answered"
            )
        raise LockNotOwned(f"lock {self.name!r}: extended on {ok} nodes, quorum is {self.quorum}")

    async def _release(self, owner: str) -> None:
        def released_by_quorum(raw: list[Any]) -> bool:
            return sum(r is not None and bool(r) for r in raw) >= self.quorum

        # The other nodes' releases run on in the background.
        raw = await self._round(RELEASE, [self.key], [owner], self.op_timeout, released_by_quorum)
        self._released = (owner, self._calls)
        results = [None if r is None else bool(r) for r in raw]
        released = sum(r is True for r in results)
        if released >= self.quorum:
            return
        answered = sum(r is not None for r in results)
        if answered < self.quorum:
            raise LockUnavailable(
                f"release {self.name!r}: only {answered} of {len(self.clients)} nodes answered"
            )
        raise LockNotOwned(f"lock {self.name!r}: held on only {released} nodes, quorum is {self.quorum}")
