"""The protocol on each real store: Redis alone, PostgreSQL alone, layered."""

from __future__ import annotations

import asyncio

import pytest

from edge_kv.origin.idempotency import (
    FingerprintMismatch,
    IdempotencyService,
    IdempotencyStore,
    InFlight,
    Outcome,
    StoredResponse,
)

OK = StoredResponse(201, (("content-type", "application/json"),), b'{"id":"ch_1"}')


class Counter:
    """A handler that counts executions and answers after ``delay`` seconds."""

    def __init__(self, response: StoredResponse = OK, delay: float = 0.0) -> None:
        self.calls = 0
        self.response = response
        self.delay = delay

    async def __call__(self) -> StoredResponse:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return self.response


async def test_100_concurrent_requests_execute_once(store: IdempotencyStore) -> None:
    svc = IdempotencyService(store)
    handler = Counter(delay=0.2)
    results = await asyncio.gather(
        *(svc.execute("key-1", "fp", handler) for _ in range(100)), return_exceptions=True
    )
    assert handler.calls == 1
    fresh = [r for r in results if isinstance(r, Outcome) and not r.replayed]
    assert len(fresh) == 1 and fresh[0].stored
    others = [r for r in results if not (isinstance(r, Outcome) and not r.replayed)]
    assert all(isinstance(r, InFlight) or (isinstance(r, Outcome) and r.response == OK) for r in others), (
        others
    )
    assert any(isinstance(r, InFlight) for r in others)
    again = await svc.execute("key-1", "fp", handler)
    assert again.replayed and again.response == OK and handler.calls == 1


async def test_wait_mode_gives_every_waiter_the_stored_response(store: IdempotencyStore) -> None:
    svc = IdempotencyService(store, in_flight="wait", wait_timeout_s=5, poll_s=0.02)
    handler = Counter(delay=0.2)
    results = await asyncio.gather(*(svc.execute("key-w", "fp", handler) for _ in range(100)))
    assert handler.calls == 1
    assert all(r.response == OK for r in results)
    assert sum(not r.replayed for r in results) == 1


async def test_wait_mode_times_out_with_in_flight(store: IdempotencyStore) -> None:
    svc = IdempotencyService(store, in_flight="wait", wait_timeout_s=0.2, poll_s=0.02)
    slow = asyncio.create_task(svc.execute("key-t", "fp", Counter(delay=1.0)))
    await asyncio.sleep(0.05)
    with pytest.raises(InFlight):
        await svc.execute("key-t", "fp", Counter())
    assert (await slow).stored


async def test_in_flight_is_409_material(store: IdempotencyStore) -> None:
    svc = IdempotencyService(store, lease_s=5)
    slow = asyncio.create_task(svc.execute("key-i", "fp", Counter(delay=0.3)))
    await asyncio.sleep(0.05)
    with pytest.raises(InFlight) as info:
        await svc.execute("key-i", "fp", Counter())
    assert 1 <= info.value.retry_after_s <= 5
    await slow


async def test_fingerprint_mismatch_done_and_in_flight(store: IdempotencyStore) -> None:
    svc = IdempotencyService(store)
    slow = asyncio.create_task(svc.execute("key-m", "fp-a", Counter(delay=0.2)))
    await asyncio.sleep(0.05)
    with pytest.raises(FingerprintMismatch):
        await svc.execute("key-m", "fp-b", Counter())
    await slow
    handler = Counter()
    with pytest.raises(FingerprintMismatch):
        await svc.execute("key-m", "fp-b", handler)
    assert handler.calls == 0


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_not_stored(store: IdempotencyStore, status: int) -> None:
    svc = IdempotencyService(store)
    failing = Counter(StoredResponse(status, (), b"oops"))
    first = await svc.execute("key-5", "fp", failing)
    assert first.response.status == status and not first.stored and not first.replayed
    ok = Counter()
    second = await svc.execute("key-5", "fp", ok)
    assert ok.calls == 1 and not second.replayed and second.stored
    assert (await svc.execute("key-5", "fp", ok)).replayed and ok.calls == 1


async def test_client_errors_are_stored(store: IdempotencyStore) -> None:
    svc = IdempotencyService(store)
    bad = Counter(StoredResponse(402, (), b"card declined"))
    await svc.execute("key-4", "fp", bad)
    again = await svc.execute("key-4", "fp", bad)
    assert again.replayed and again.response.status == 402 and bad.calls == 1


async def test_exception_is_not_stored_and_retry_executes(store: IdempotencyStore) -> None:
    svc = IdempotencyService(store)

    async def boom() -> StoredResponse:
        raise RuntimeError("db down")

    with pytest.raises(RuntimeError, match="db down"):
        await svc.execute("key-e", "fp", boom)
    ok = Counter()
    out = await svc.execute("key-e", "fp", ok)
    assert ok.calls == 1 and not out.replayed and out.stored


async def test_cancelled_handler_releases_the_mark(store: IdempotencyStore) -> None:
    svc = IdempotencyService(store)
    task = asyncio.create_task(svc.execute("key-c", "fp", Counter(delay=5)))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    ok = Counter()
    assert not (await svc.execute("key-c", "fp", ok)).replayed and ok.calls == 1


async def test_scopes_do_not_collide(store: IdempotencyStore) -> None:
    svc = IdempotencyService(store)
    alice, bob = Counter(StoredResponse(200, (), b"alice")), Counter(StoredResponse(200, (), b"bob"))
    assert (await svc.execute("same", "fp", alice, scope="alice")).response.body == b"alice"
    out = await svc.execute("same", "other-fp", bob, scope="bob")
    assert out.response.body == b"bob" and not out.replayed
    assert (await svc.execute("same", "fp", bob, scope="alice")).response.body == b"alice"


async def test_lease_renewal_keeps_a_long_handler_exclusive(store: IdempotencyStore) -> None:
    svc = IdempotencyService(store, lease_s=0.3)
    slow = Counter(delay=1.0)
    task = asyncio.create_task(svc.execute("key-r", "fp", slow))
    await asyncio.sleep(0.7)  # more than two leases later
    second = Counter()
    with pytest.raises(InFlight):
        await svc.execute("key-r", "fp", second)
    assert (await task).stored and second.calls == 0


async def test_without_renewal_the_lease_lapses(store: IdempotencyStore) -> None:
    svc = IdempotencyService(store, lease_s=0.2, renew=False)
    slow = Counter(delay=0.6)
    task = asyncio.create_task(svc.execute("key-n", "fp", slow))
    await asyncio.sleep(0.35)
    second = Counter()
    assert not (await svc.execute("key-n", "fp", second)).replayed and second.calls == 1
    first = await task
    assert not first.stored  # its mark was taken over: the late completion is refused


async def test_store_transitions_check_the_owner_token(store: IdempotencyStore) -> None:
    assert (await store.begin("k", "fp", "tok-a", 150)).acquired
    assert not (await store.begin("k", "fp", "tok-b", 150)).acquired
    assert not await store.extend("k", "tok-b", 150)
    assert not await store.release("k", "tok-b")
    await asyncio.sleep(0.25)
    assert (await store.begin("k", "fp", "tok-b", 5000)).acquired
    assert not await store.complete("k", "tok-a", OK, 60_000)
    assert not await store.release("k", "tok-a")
    assert await store.complete("k", "tok-b", OK, 60_000)
    rec = await store.get("k")
    assert rec is not None and rec.response == OK and rec.fingerprint == "fp"
    assert 50_000 < rec.expires_in_ms <= 60_000
    assert not await store.release("k", "tok-b")  # done records are not in-flight marks
    assert await store.get("missing") is None


async def test_binary_bodies_and_headers_round_trip(store: IdempotencyStore) -> None:
    svc = IdempotencyService(store)
    resp = StoredResponse(
        200, (("x-a", "1"), ("set-cookie", "a=1"), ("set-cookie", "b=2")), bytes(range(256))
    )
    await svc.execute("key-b", "fp", Counter(resp))
    assert (await svc.execute("key-b", "fp", Counter())).response == resp


async def test_bad_input(store: IdempotencyStore) -> None:
    svc = IdempotencyService(store)
    for key in ("", "x" * 256, "white space", 5):
        with pytest.raises(ValueError):
            await svc.execute(key, "fp", Counter())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        IdempotencyService(store, ttl_s=0)
    with pytest.raises(ValueError):
        IdempotencyService(store, in_flight="queue")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        IdempotencyService(store, lease_s=-1)


async def test_ttl_expiry_frees_the_key(store: IdempotencyStore) -> None:
    svc = IdempotencyService(store, ttl_s=0.2)
    first = Counter()
    await svc.execute("key-ttl", "fp", first)
    assert (await svc.execute("key-ttl", "fp", first)).replayed
    await asyncio.sleep(0.3)
    assert not (await svc.execute("key-ttl", "other", first)).replayed and first.calls == 2
