"""Delete expired idempotency rows (and, optionally, old processed-message records).

Run it from cron / a Kubernetes CronJob / a scheduled task; correctness never depends on
it (an expired row already counts as absent), it only keeps the tables small:

    python -m edge_kv.origin.idempotency.cleanup --dsn postgresql://... \\
        [--table edge_kv_idempotency_keys] [--messages-table edge_kv_processed_messages \\
         --messages-ttl-s 604800] [--batch 1000]

Prints one line per table with the number of rows deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from edge_kv.origin._pg import PgPool

from .dedup import PostgresDeduplicator
from .postgres_store import PostgresStore


async def run(
    dsn: str, table: str, messages_table: str | None, messages_ttl_s: float, batch: int
) -> dict[str, int]:
    async with PgPool(dsn, size=1) as pool:
        deleted = {table: await PostgresStore(pool.connection, table=table).cleanup(batch=batch)}
        if messages_table:
            dedup = PostgresDeduplicator(pool.connection, table=messages_table, ttl_s=messages_ttl_s)
            deleted[messages_table] = await dedup.cleanup(batch=batch)
    return deleted


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Delete expired edge_kv idempotency rows.")
    ap.add_argument("--dsn", default=os.environ.get("EDGE_KV_PG_DSN"), help="default: $EDGE_KV_PG_DSN")
    ap.add_argument("--table", default="edge_kv_idempotency_keys")
    ap.add_argument("--messages-table", default=None)
    ap.add_argument("--messages-ttl-s", type=float, default=7 * 86400)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args(argv)
    if not args.dsn:
        ap.error("--dsn or EDGE_KV_PG_DSN is required")
    if args.batch < 1:
        ap.error("--batch must be >= 1")
    deleted = asyncio.run(run(args.dsn, args.table, args.messages_table, args.messages_ttl_s, args.batch))
    for name, n in deleted.items():
        print(f"{name}: {n} expired rows deleted")


if __name__ == "__main__":
    main()
