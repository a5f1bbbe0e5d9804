"""The saga used by the saga tests and their child process: three steps whose effects
are rows in an effects table, idempotent by the step's idempotency key."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from psycopg import sql

from edge_kv.origin._pg import PgPool
from edge_kv.origin.messaging import SagaDefinition, SagaOrchestrator, SagaRecord, SagaStep, StepContext

STEPS = ("reserve", "charge", "ship")
KILLED = 9


async def create_effects(pool: PgPool, table: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (n bigserial, idem_key text PRIMARY KEY, saga_id text, "
                "step int, phase text)"
            ).format(sql.Identifier(table))
        )


async def effects_of(pool: PgPool, table: str, saga_id: str) -> list[tuple[int, str]]:
    """(step, phase) of each effect of the saga, in the order they happened."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            sql.SQL("SELECT step, phase FROM {} WHERE saga_id = %s ORDER BY n").format(sql.Identifier(table)),
            (saga_id,),
        )
        return [(int(r[0]), str(r[1])) for r in await cur.fetchall()]


def definition(
    pool: PgPool,
    effects: str,
    *,
    fail_step: int = -1,
    after_effect: Callable[[], None] | None = None,
    action_hook: Callable[[StepContext], Any] | None = None,
    compensation_fails: bool = False,
) -> SagaDefinition:
    insert = sql.SQL(
        "INSERT INTO {} (idem_key, saga_id, step, phase) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING"
    ).format(sql.Identifier(effects))

    async def apply(ctx: StepContext) -> None:
        async with pool.connection() as conn:
            await conn.execute(insert, (ctx.idempotency_key, ctx.saga_id, ctx.step, ctx.phase))
        if after_effect is not None:
            after_effect()

    async def action(ctx: StepContext) -> Any:
        if action_hook is not None:
            await action_hook(ctx)
        if ctx.step == fail_step:
            raise RuntimeError(f"step {ctx.step_name} refused")
        await apply(ctx)
        return {"step": ctx.step, "seen": len(ctx.results)}

    async def compensation(ctx: StepContext) -> None:
        if compensation_fails:
            raise RuntimeError(f"cannot undo {ctx.step_name}")
        await apply(ctx)

    return SagaDefinition("order", [SagaStep(name, action, compensation, timeout_s=2.0) for name in STEPS])


async def child(dsn: str, table: str, effects: str, saga_id: str, kill_at: str, fail_step: str) -> None:
    """Drive saga ``saga_id`` and die at kill point number ``kill_at`` (1-based): the
    points are every persisted transition and every effect applied (before its
    transition is persisted)."""
    points = 0

    def point(*_: object) -> None:
        nonlocal points
        points += 1
        if points == int(kill_at):
            os._exit(KILLED)

    async with PgPool(dsn, size=2) as pool:
        orch = SagaOrchestrator(
            pool,
            [definition(pool, effects, fail_step=int(fail_step), after_effect=point)],
            table=table,
            lease_s=0.5,
            on_transition=point,
        )
        record: SagaRecord = await orch.start("order", {"order": saga_id}, saga_id=saga_id)
        print(record.status, points, flush=True)
