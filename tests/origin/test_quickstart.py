"""The seeds' quick start, as written, against a real redis-server and the real PostgreSQL:

    async with RedisLock(redis_client, "payment:order-123"): ...
    @circuit_breaker(failure_threshold=5, recovery_timeout=30)
    @retry(max_attempts=3, base_delay=1.0)
    async def call_external_api(): ...
    return await idempotent_execute(db, idempotency_key, "/payments", process)
    limiter = TokenBucketLimiter(redis_client, capacity=100, refill_rate=10)
    if await limiter.is_allowed(f"user:{user_id}"): ...

plus what each convenience promises (docs/resilience.md, docs/idempotency.md,
docs/origin-ratelimit.md), the package-level imports, and that ``import edge_kv.origin``
needs none of the optional extras.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

import edge_kv.origin
from edge_kv.core.errors import InvalidInput, Unavailable
from edge_kv.origin import RedisLock, TokenBucketLimiter, circuit_breaker, idempotent_execute, retry
from edge_kv.origin.idempotency import (
    FingerprintMismatch,
    InFlight,
    LayeredStore,
    PgPool,
    PostgresStore,
    RedisStore,
    StoreUnavailable,
)
from edge_kv.origin.locks import LockAcquireTimeout
from edge_kv.origin.ratelimit import RateLimiter, RateLimiterUnavailable
from edge_kv.origin.resilience import CircuitOpenError, FakeClock, RetryPolicy
from edge_kv.origin.testing import free_port

# -- PostgreSQL: a throwaway schema first on the search_path, so the quick start's default
# -- table (edge_kv_idempotency_keys, created on first use) never lands in `public`.


@pytest.fixture(scope="module")
def pg_search_path_dsn(pg_dsn: str) -> Iterator[str]:
    schema = f"edge_kv_quick_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in pg_dsn else "?"
    try:
        yield f"{pg_dsn}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest_asyncio.fixture
async def db(pg_search_path_dsn: str) -> AsyncIterator[PgPool]:
    async with PgPool(pg_search_path_dsn, size=4) as pool:
        yield pool


def new_key() -> str:
    return f"idem-{uuid.uuid4()}"


# -- the quick start, verbatim ------------------------------------------------------------


class ExternalApi:
    """What ``call_external_api`` reaches: scripted failures, then a charge id."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {"charge": f"ch_{self.calls}", "amount": 4200}


def make_service(api: ExternalApi) -> Any:
    """The quick start's lines in a handler, as a user would write them."""

    @circuit_breaker(failure_threshold=5, recovery_timeout=30)
    @retry(max_attempts=3, base_delay=1.0)
    async def call_external_api() -> dict[str, Any]:
        return await api()

    async def pay(redis_client: aioredis.Redis, db: Any, user_id: int, idempotency_key: str) -> Any:
        limiter = TokenBucketLimiter(redis_client, capacity=100, refill_rate=10)
        if await limiter.is_allowed(f"user:{user_id}"):
            async with RedisLock(redis_client, "payment:order-123"):

                async def process() -> dict[str, Any]:
                    return await call_external_api()

                return await idempotent_execute(db, idempotency_key, "/payments", process)
        return None

    pay.call_external_api = call_external_api  # type: ignore[attr-defined]
    return pay


async def test_quick_start_as_written(redis: aioredis.Redis, db: PgPool) -> None:
    api = ExternalApi(ConnectionError("blip"))  # one transient failure: retried (sleep <= 1 s)
    pay = make_service(api)
    key = new_key()

    first = await pay(redis, db, 42, key)
    assert first == {"charge": "ch_2", "amount": 4200}
    assert api.calls == 2  # the retry made the second attempt

    again = await pay(redis, db, 42, key)  # a repeat: the stored result, process not called
    assert again == first and api.calls == 2
    assert await redis.exists(RedisLock(redis, "payment:order-123").key) == 0  # released

    with pytest.raises(FingerprintMismatch) as mismatch:  # same key, different request
        await idempotent_execute(db, key, "/refunds", api)
    assert mismatch.value.status == 422 and api.calls == 2

    other = await pay(redis, db, 42, new_key())  # a new key runs again
    assert other == {"charge": "ch_3", "amount": 4200}
    assert pay.call_external_api.breaker.state == "closed"


async def test_quick_start_on_redis_alone(redis: aioredis.Redis) -> None:
    api = ExternalApi()
    pay = make_service(api)
    key = new_key()
    assert await pay(redis, redis, 7, key) == {"charge": "ch_1", "amount": 4200}
    assert await pay(redis, redis, 7, key) == {"charge": "ch_1", "amount": 4200}
    assert api.calls == 1
    with pytest.raises(FingerprintMismatch):
        await idempotent_execute(redis, key, "/payments/other", api)


# -- @circuit_breaker ---------------------------------------------------------------------


async def test_circuit_breaker_opens_after_five_consecutive_failures() -> None:
    api = ExternalApi(*[ValueError("bad") for _ in range(10)])  # not retryable: no sleeping
    call_external_api = make_service(api).call_external_api
    for _ in range(4):
        with pytest.raises(ValueError):
            await call_external_api()
    assert call_external_api.breaker.state == "closed"
    with pytest.raises(ValueError):
        await call_external_api()  # the 5th consecutive failure opens it
    assert call_external_api.breaker.state == "open"
    with pytest.raises(CircuitOpenError) as refused:
        await call_external_api()
    assert api.calls == 5  # refused without calling
    assert isinstance(refused.value, Unavailable) and refused.value.status == 503
    assert refused.value.code == "circuit_open"
    assert 29 < refused.value.retry_after <= 30


async def test_circuit_breaker_recovers_after_recovery_timeout_and_resets_on_success() -> None:
    clock = FakeClock()
    api = ExternalApi(*[ConnectionError() for _ in range(5)])

    @circuit_breaker(failure_threshold=5, recovery_timeout=30, clock=clock)
    async def call() -> Any:
        return await api()

    test = test_circuit_breaker_recovers_after_recovery_timeout_and_resets_on_success
    assert call.breaker.name == f"{__name__}.{test.__qualname__}.<locals>.call"  # the default name
    for _ in range(5):
        with pytest.raises(ConnectionError):
            await call()
    clock.advance(29.9)
    with pytest.raises(CircuitOpenError):
        await call()
    clock.advance(0.1)
    assert (await call())["charge"] == "ch_6"  # the half-open probe succeeds: closed
    assert call.breaker.state == "closed"

    # Failures that are not consecutive never open it.
    mixed = ExternalApi()
    outcomes = iter([True, True, False, True, True, False, True, True])

    @circuit_breaker(failure_threshold=3, recovery_timeout=30, name="mixed", clock=clock)
    async def alternating() -> Any:
        if next(outcomes):
            raise ConnectionError
        return await mixed()

    for _ in range(8):
        with contextlib.suppress(ConnectionError):
            await alternating()
    assert alternating.breaker.state == "closed"  # never 3 failures in a row


# -- @retry -------------------------------------------------------------------------------


async def test_retry_backs_off_with_full_jitter_and_gives_up_after_max_attempts() -> None:
    clock = FakeClock()
    api = ExternalApi(*[TimeoutError() for _ in range(5)])

    @retry(max_attempts=3, base_delay=1.0, clock=clock)
    async def call() -> Any:
        return await api()

    with pytest.raises(TimeoutError):
        await call()
    assert api.calls == 3 and len(clock.sleeps) == 2
    assert 0 <= clock.sleeps[0] <= 1.0 and 0 <= clock.sleeps[1] <= 2.0

    policy = retry(max_attempts=4, base_delay=0.5, jitter=False, clock=clock)
    assert isinstance(policy, RetryPolicy)
    api2 = ExternalApi(*[ConnectionError() for _ in range(3)])
    clock.sleeps.clear()
    assert (await policy(api2)())["charge"] == "ch_4"
    assert clock.sleeps == [0.5, 1.0, 2.0] and policy.metrics.retries == 3

    never = ExternalApi(ValueError("a bug, not a blip"))
    with pytest.raises(ValueError):
        await retry(clock=clock)(never)()
    assert never.calls == 1
    for bad in ({"base_delay": -1}, {"base_delay": float("inf")}, {"max_delay": float("nan")}):
        with pytest.raises(InvalidInput):
            retry(**bad)
    with pytest.raises(ValueError):
        retry(max_attempts=0)


async def test_breaker_above_retry_counts_one_outcome_per_retried_call() -> None:
    clock = FakeClock()
    api = ExternalApi(*[ConnectionError() for _ in range(100)])

    @circuit_breaker(failure_threshold=5, recovery_timeout=30, clock=clock)
    @retry(max_attempts=3, base_delay=1.0, clock=clock)
    async def call_external_api() -> Any:
        return await api()

    for _ in range(5):
        with pytest.raises(ConnectionError):
            await call_external_api()
    assert api.calls == 15  # 5 calls x 3 attempts, then open
    with pytest.raises(CircuitOpenError):
        await call_external_api()
    assert api.calls == 15


# -- RedisLock ----------------------------------------------------------------------------


async def test_redis_lock_excludes_a_second_holder(redis: aioredis.Redis) -> None:
    async with RedisLock(redis, "payment:order-123") as lock:
        assert lock.token is not None and lock.token >= 1
        first_token = lock.token
        assert await redis.exists(lock.key) == 1
        with pytest.raises(LockAcquireTimeout):
            async with RedisLock(redis, "payment:order-123", blocking_timeout=0.05):
                pass
    async with RedisLock(redis, "payment:order-123") as again:
        assert again.token is not None and again.token > first_token  # fencing tokens keep increasing


# -- TokenBucketLimiter -------------------------------------------------------------------


async def test_token_bucket_limiter_admits_capacity_then_refills(redis: aioredis.Redis) -> None:
    limiter = TokenBucketLimiter(redis, capacity=100, refill_rate=10)
    assert isinstance(limiter, RateLimiter)
    user_id = 42
    allowed = [await limiter.is_allowed(f"user:{user_id}") for _ in range(100)]
    assert allowed == [True] * 100  # the burst
    # Empty now; 50 tokens take 5 s to come back (a 101st single request would be refused
    # too, unless this machine took over 0.1 s for the hundred calls above).
    assert not await limiter.is_allowed(f"user:{user_id}", cost=50)
    assert await limiter.is_allowed("user:43")  # every key has its own bucket
    result = await limiter.peek(f"user:{user_id}")
    assert not result.allowed or result.decision.remaining == 0
    await asyncio.sleep(0.25)  # 10 tokens/s: at least two back
    assert await limiter.is_allowed(f"user:{user_id}")
    headers = dict((await limiter.hit("user:44")).headers())
    assert headers["RateLimit-Policy"] == '"default";q=100;w=10'
    with pytest.raises(ValueError):
        TokenBucketLimiter(redis, capacity=0, refill_rate=10)
    with pytest.raises(ValueError):
        await limiter.is_allowed("")


async def test_token_bucket_limiter_when_redis_is_down() -> None:
    dead = aioredis.Redis(port=free_port(), socket_connect_timeout=0.2)
    try:
        with pytest.raises(RateLimiterUnavailable) as down:
            await TokenBucketLimiter(dead, capacity=100, refill_rate=10, timeout=0.5).is_allowed("user:1")
        assert isinstance(down.value, Unavailable) and isinstance(down.value, RuntimeError)
        assert down.value.code == "rate_limiter_unavailable"
        limiter = TokenBucketLimiter(dead, capacity=100, refill_rate=10, timeout=0.5, fail_open=True)
        assert await limiter.is_allowed("user:1")
    finally:
        await dead.aclose()


# -- idempotent_execute -------------------------------------------------------------------


async def test_idempotent_execute_on_every_kind_of_db(
    redis: aioredis.Redis, db: PgPool, pg_search_path_dsn: str
) -> None:
    conn = await psycopg.AsyncConnection.connect(pg_search_path_dsn, autocommit=True)
    layered = LayeredStore(RedisStore(redis, prefix="edge_kv:quick-cache:"), PostgresStore(db.connection))
    await layered.postgres.create_schema()
    try:
        for target in (redis, db, db.connection, conn, RedisStore(redis), layered):
            calls = 0

            async def process() -> dict[str, Any]:
                nonlocal calls
                calls += 1
                return {"n": calls, "items": (1, 2)}

            key = new_key()
            first = await idempotent_execute(target, key, "/payments", process, payload={"a": 1, "b": 2})
            assert first == {"n": 1, "items": [1, 2]}  # JSON, also the first time
            replay = await idempotent_execute(target, key, "/payments", process, payload={"b": 2, "a": 1})
            assert replay == first and calls == 1, type(target).__name__
            with pytest.raises(FingerprintMismatch):
                await idempotent_execute(target, key, "/payments", process, payload={"a": 2})
            assert calls == 1
    finally:
        await conn.close()


async def test_idempotent_execute_concurrency_errors_and_scopes(redis: aioredis.Redis, db: PgPool) -> None:
    gate = asyncio.Event()
    calls = 0

    async def slow() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return "done"

    key = new_key()
    first = asyncio.create_task(idempotent_execute(db, key, "/payments", slow))
    while calls == 0:  # noqa: ASYNC110 - waiting for the first call to claim the key
        await asyncio.sleep(0.01)
    with pytest.raises(InFlight) as busy:
        await idempotent_execute(db, key, "/payments", slow)
    assert busy.value.status == 409
    waiters = [
        asyncio.create_task(idempotent_execute(db, key, "/payments", slow, in_flight="wait"))
        for _ in range(10)
    ]
    await asyncio.sleep(0.1)
    gate.set()
    assert await first == "done"
    assert await asyncio.gather(*waiters) == ["done"] * 10
    assert calls == 1

    async def failing() -> str:
        nonlocal calls
        calls += 1
        raise ConnectionError("payment provider down")

    key = new_key()
    with pytest.raises(ConnectionError):
        await idempotent_execute(redis, key, "/payments", failing)
    with pytest.raises(ConnectionError):  # nothing stored: the retry runs again
        await idempotent_execute(redis, key, "/payments", failing)
    assert calls == 3

    async def ok() -> str:
        return "ok"

    key = new_key()
    assert await idempotent_execute(redis, key, "/payments", ok, scope="alice") == "ok"
    assert await idempotent_execute(redis, key, "/refunds", ok, scope="bob") == "ok"  # another scope

    async def unencodable() -> object:
        return object()

    with pytest.raises(TypeError):
        await idempotent_execute(redis, new_key(), "/payments", unencodable)
    for bad_key in ("", "has space", "x" * 256):
        with pytest.raises(ValueError):
            await idempotent_execute(redis, bad_key, "/payments", ok)
    with pytest.raises(InvalidInput):
        await idempotent_execute(redis, new_key(), "", ok)
    with pytest.raises(InvalidInput):
        await idempotent_execute(redis, new_key(), "/payments", ok, payload={"x": float("nan")})
    with pytest.raises(InvalidInput):
        await idempotent_execute(object(), new_key(), "/payments", ok)

    dead = aioredis.Redis(port=free_port(), socket_connect_timeout=0.2)
    try:
        with pytest.raises(StoreUnavailable) as down:
            await idempotent_execute(dead, new_key(), "/payments", ok)
        assert isinstance(down.value, Unavailable) and down.value.status == 503
    finally:
        await dead.aclose()


# -- imports ------------------------------------------------------------------------------


def test_quick_start_names_are_importable_from_their_packages_and_from_origin() -> None:
    from edge_kv.origin.idempotency import idempotent_execute as idem
    from edge_kv.origin.locks import RedisLock as Lock
    from edge_kv.origin.ratelimit import TokenBucketLimiter as Limiter
    from edge_kv.origin.resilience import circuit_breaker as breaker
    from edge_kv.origin.resilience import retry as retry_

    assert (idem, Lock, Limiter, breaker, retry_) == (
        idempotent_execute,
        RedisLock,
        TokenBucketLimiter,
        circuit_breaker,
        retry,
    )
    assert set(edge_kv.origin.__all__) <= set(dir(edge_kv.origin))
    with pytest.raises(AttributeError):
        _ = edge_kv.origin.NoSuchName


@pytest.mark.parametrize("package", ["locks", "ratelimit", "idempotency", "resilience"])
def test_every_origin_package_declares_its_public_names(package: str) -> None:
    module = __import__(f"edge_kv.origin.{package}", fromlist=["__all__"])
    names = module.__all__
    assert len(set(names)) == len(names)
    for name in names:
        assert getattr(module, name) is not None, name
    assert {n for n in vars(module) if not n.startswith("_") and not _is_submodule(module, n)} <= set(names)


def _is_submodule(package: Any, name: str) -> bool:
    value = getattr(package, name)
    return type(value).__name__ == "module"


def test_import_edge_kv_origin_needs_no_extras() -> None:
    code = (
        "import sys, edge_kv.origin\n"
        "loaded = sorted(m for m in ('redis', 'psycopg', 'httpx') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
        "from edge_kv.origin import circuit_breaker, retry\n"  # resilience is stdlib-only
        "loaded = sorted(m for m in ('redis', 'psycopg', 'httpx') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
