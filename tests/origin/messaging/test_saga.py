"""The saga orchestrator: compensation in reverse for exactly the completed steps,
timeouts, stuck sagas, correlation ids, and resumption after a SIGKILL at every
transition."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_kv.origin._pg import PgPool
from edge_kv.origin.messaging import (
    CAUSATION_ID,
    COMPENSATED,
    COMPLETED,
    CORRELATION_ID,
    STUCK,
    Outbox,
    Relay,
    SagaOrchestrator,
    StepContext,
    UnknownSaga,
)
from edge_kv.origin.resilience import RetryPolicy

from . import saga_steps
from .fakes import RecordingPublisher

CHILDREN = Path(__file__).with_name("children.py")


@pytest.fixture
async def effects(pool: PgPool, tables: Callable[[str], str]) -> str:
    name = tables("effects")
    await saga_steps.create_effects(pool, name)
    return name


def _expected(fail_step: int) -> list[tuple[int, str]]:
    if fail_step < 0:
        return [(i, "action") for i in range(3)]
    done = list(range(fail_step))
    return [(i, "action") for i in done] + [(i, "compensation") for i in reversed(done)]


@pytest.mark.parametrize("fail_step", [-1, 0, 1, 2])
async def test_failure_at_each_step_compensates_the_completed_steps_in_reverse(
    pool: PgPool, tables: Callable[[str], str], effects: str, fail_step: int
) -> None:
    orch = SagaOrchestrator(
        pool, [saga_steps.definition(pool, effects, fail_step=fail_step)], table=tables("sagas")
    )
    await orch.migrate()
    record = await orch.start("order", {"n": 1}, saga_id=f"s{fail_step}")
    assert await saga_steps.effects_of(pool, effects, record.saga_id) == _expected(fail_step)
    if fail_step < 0:
        assert record.status == COMPLETED and record.results == [{"step": i, "seen": i} for i in range(3)]
        assert record.error is None and record.failed_step is None
    else:
        assert record.status == COMPENSATED and record.failed_step == fail_step
        assert record.error == f"RuntimeError: step {saga_steps.STEPS[fail_step]} refused"
    assert await orch.get(record.saga_id) == record
    assert await orch.unfinished() == []
    # Starting it again (same id) changes nothing.
    assert (await orch.start("order", {"n": 1}, saga_id=record.saga_id)).version == record.version


async def test_a_step_past_its_timeout_fails_the_saga(
    pool: PgPool, tables: Callable[[str], str], effects: str
) -> None:
    async def hang_on_charge(ctx: StepContext) -> None:
        if ctx.step_name == "charge":
            await asyncio.sleep(5)

    definition = saga_steps.definition(pool, effects, action_hook=hang_on_charge)
    definition = type(definition)(
        definition.name, [type(s)(s.name, s.action, s.compensation, timeout_s=0.2) for s in definition.steps]
    )
    orch = SagaOrchestrator(
        pool, [definition], table=tables("sagas"), action_retry=RetryPolicy(max_attempts=2)
    )
    await orch.migrate()
    record = await orch.start("order", {})
    assert record.status == COMPENSATED and record.failed_step == 1 and "timed out" in (record.error or "")
    assert await saga_steps.effects_of(pool, effects, record.saga_id) == [(0, "action"), (0, "compensation")]


async def test_a_compensation_that_keeps_failing_parks_the_saga_as_stuck(
    pool: PgPool, tables: Callable[[str], str], effects: str
) -> None:
    table = tables("sagas")
    bad = SagaOrchestrator(
        pool,
        [saga_steps.definition(pool, effects, fail_step=2, compensation_fails=True)],
        table=table,
        compensation_retry=RetryPolicy(max_attempts=3, backoff=None),
    )
    await bad.migrate()
    record = await bad.start("order", {}, saga_id="stuck-1")
    assert record.status == STUCK and record.step == 1 and record.error == "RuntimeError: cannot undo charge"
    assert [r.saga_id for r in await bad.stuck()] == ["stuck-1"]
    # Fixed: the compensations run on from where they stopped.
    good = SagaOrchestrator(pool, [saga_steps.definition(pool, effects, fail_step=2)], table=table)
    record = await good.retry_stuck("stuck-1")
    assert record.status == COMPENSATED and await good.stuck() == []
    assert await saga_steps.effects_of(pool, effects, "stuck-1") == _expected(2)
    with pytest.raises(UnknownSaga):
        await good.retry_stuck("stuck-1")
    with pytest.raises(UnknownSaga):
        await good.start("no-such-type", {})


async def test_transition_events_carry_correlation_and_causation(
    pool: PgPool, tables: Callable[[str], str], effects: str
) -> None:
    outbox = Outbox(tables("outbox"))
    seen: list[StepContext] = []

    async def record_ctx(ctx: StepContext) -> None:
        seen.append(ctx)

    orch = SagaOrchestrator(
        pool,
        [saga_steps.definition(pool, effects, fail_step=1, action_hook=record_ctx)],
        table=tables("sagas"),
        outbox=outbox,
    )
    await orch.migrate()
    record = await orch.start("order", {}, correlation_id="corr-1", causation_id="http-request-7")
    pub = RecordingPublisher()
    await Relay(outbox, pool, pub).drain()
    events = [m.payload["event"] for m in pub.sent]
    assert events == ["started", "step_completed", "step_failed", "step_compensated", "compensated"]
    assert all(m.headers[CORRELATION_ID] == "corr-1" and m.key == record.saga_id for m in pub.sent)
    causes = [m.headers.get(CAUSATION_ID) for m in pub.sent]
    assert causes == ["http-request-7", *(m.id for m in pub.sent[:-1])]
    assert [c.causation_id for c in seen] == [pub.sent[0].id, pub.sent[1].id]
    assert seen[0].headers() == {CORRELATION_ID: "corr-1", CAUSATION_ID: pub.sent[0].id}
    assert record.last_event_id == pub.sent[-1].id


async def _run_child(
    pg_dsn: str, table: str, effects: str, saga_id: str, kill_at: int, fail_step: int
) -> int:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILDREN),
        "saga",
        pg_dsn,
        table,
        effects,
        saga_id,
        str(kill_at),
        str(fail_step),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode in (0, saga_steps.KILLED), err.decode()
    return proc.returncode or 0


@pytest.mark.slow
@pytest.mark.parametrize("fail_step", [-1, 2])
async def test_killed_at_every_transition_resumes_to_the_same_end_state(
    pg_dsn: str, pool: PgPool, tables: Callable[[str], str], effects: str, fail_step: int
) -> None:
    """Kill points: every persisted transition and every applied effect (before its
    transition is persisted). 8 points on the success path, 11 when step 2 fails."""
    table = tables("sagas")
    orch = SagaOrchestrator(
        pool, [saga_steps.definition(pool, effects, fail_step=fail_step)], table=table, lease_s=0.5
    )
    await orch.migrate()
    points = 8 if fail_step < 0 else 11
    sem = asyncio.Semaphore(4)

    async def one(k: int) -> int:
        async with sem:
            return await _run_child(pg_dsn, table, effects, f"saga-{k}", k, fail_step)

    codes = await asyncio.gather(*(one(k) for k in range(1, points + 2)))
    assert codes == [saga_steps.KILLED] * points + [0], "one kill per point, and the last run is not killed"
    await asyncio.sleep(0.6)  # the dead orchestrators' leases expire
    resumed = await orch.resume_all()
    assert len(resumed) == sum(1 for k in range(1, points + 1) if k < points)  # the last point is terminal
    end = COMPLETED if fail_step < 0 else COMPENSATED
    for k in range(1, points + 2):
        record = await orch.get(f"saga-{k}")
        assert record.status == end, (k, record)
        assert await saga_steps.effects_of(pool, effects, record.saga_id) == _expected(fail_step), k
    assert await orch.unfinished() == []
