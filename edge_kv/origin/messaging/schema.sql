-- edge_kv messaging tables. The placeholders ({table}, {dead}, {pending_idx}, ...) are
-- filled in (quoted) by edge_kv.origin.messaging._schema; run them once at deploy time
-- with create_outbox_schema / create_saga_schema (idempotent: IF NOT EXISTS).

-- section: outbox
-- One row per event. seq is the order of events of one key: Outbox.add serialises the
-- transactions writing one key (a transaction-level advisory lock), so a later seq of a
-- key is always a later commit. published_at is set by the relay that published the
-- row; cleanup deletes published rows after the retention period.
CREATE TABLE IF NOT EXISTS {table} (
    seq             bigserial   PRIMARY KEY,
    id              text        NOT NULL UNIQUE,
    topic           text        NOT NULL,
    key             text        NOT NULL,
    payload         jsonb       NOT NULL,
    headers         jsonb       NOT NULL DEFAULT '{{}}',
    created         timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    published_at    timestamptz
);
-- The relay's claim: the oldest pending event of each key.
CREATE INDEX IF NOT EXISTS {pending_idx} ON {table} (key, seq) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS {published_idx} ON {table} (published_at) WHERE published_at IS NOT NULL;
-- Events that failed max_attempts times, with the last error (Outbox.requeue_dead puts
-- them back).
CREATE TABLE IF NOT EXISTS {dead} (
    seq             bigint      PRIMARY KEY,
    id              text        NOT NULL,
    topic           text        NOT NULL,
    key             text        NOT NULL,
    payload         jsonb       NOT NULL,
    headers         jsonb       NOT NULL,
    created         timestamptz NOT NULL,
    attempts        integer     NOT NULL,
    last_error      text,
    dead_at         timestamptz NOT NULL DEFAULT now()
);

-- section: sagas
-- One row per saga. status 'running': step is the next action to run; 'compensating':
-- step is the next compensation to run (counting down, -1 when none is left); the
-- terminal states are 'completed', 'compensated' and 'stuck' (a compensation kept
-- failing: error says why). owner/lease_until: the orchestrator driving it; another one
-- takes it over once the lease has expired. version counts the transitions.
CREATE TABLE IF NOT EXISTS {table} (
    saga_id         text        PRIMARY KEY,
    saga_type       text        NOT NULL,
    status          text        NOT NULL
                    CHECK (status IN ('running', 'compensating', 'completed', 'compensated', 'stuck')),
    step            integer     NOT NULL,
    data            jsonb       NOT NULL,
    results         jsonb       NOT NULL DEFAULT '[]',
    failed_step     integer,
    error           text,
    correlation_id  text        NOT NULL,
    last_event_id   text,
    owner           text,
    lease_until     timestamptz,
    version         integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS {unfinished_idx} ON {table} (lease_until)
    WHERE status IN ('running', 'compensating');
CREATE INDEX IF NOT EXISTS {stuck_idx} ON {table} (updated_at) WHERE status = 'stuck';
