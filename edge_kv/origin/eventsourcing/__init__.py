"""Event sourcing and CQRS on PostgreSQL.

* :class:`EventStore`: append with an expected version (:class:`ConcurrencyError` by a
  unique constraint), a gap-free global position in commit order, read a stream or
  everything by position, snapshots, and an ``in_transaction`` hook for outbox writes in
  the append's transaction. ``await store.migrate()`` creates its tables.
* :class:`Aggregate` / :func:`applies` / :class:`Repository`: aggregates as plain Python
  (commands raise :class:`DomainError`, apply functions per event type), loaded by replay
  or snapshot + tail, snapshots every N events, :class:`Upcasters` for old event schemas.
* :class:`Projection` / :class:`ProjectionRunner`: read models updated in the same
  transaction as their checkpoint, catch up then follow live (LISTEN/NOTIFY), rebuild
  into a new table and swap.
* :func:`retry_on_conflict` / :meth:`Repository.execute`: reload and re-run a command on
  :class:`ConcurrencyError` under a bounded :class:`~edge_kv.origin.resilience.RetryPolicy`.

::

    store = EventStore(PgPool(dsn), table="bank_events")
    await store.migrate()
    accounts = Repository(store, Account, snapshot_every=100)
    await accounts.execute("acc-1", lambda a: a.deposit(500))

See docs/event-sourcing.md.
"""

from edge_kv.origin._pg import ConnectionFactory, PgPool

from .aggregate import Aggregate, applies
from .errors import ConcurrencyError, DomainError, EventStoreUnavailable
from .events import NewEvent, RecordedEvent, Snapshot
from .projection import Projection, ProjectionRunner
from .repository import Repository
from .retry import conflict_policy, retry_on_conflict
from .store import EventStore, InTransaction
from .upcasting import Upcaster, Upcasters

__all__ = [
    "Aggregate",
    "ConcurrencyError",
    "ConnectionFactory",
    "DomainError",
    "EventStore",
    "EventStoreUnavailable",
    "InTransaction",
    "NewEvent",
    "PgPool",
    "Projection",
    "ProjectionRunner",
    "RecordedEvent",
    "Repository",
    "Snapshot",
    "Upcaster",
    "Upcasters",
    "applies",
    "conflict_policy",
    "retry_on_conflict",
]
