-- edge_kv idempotency tables. {table} and {index} are filled in (quoted) by
-- edge_kv.origin.idempotency.schema.schema_statements; run them once at deploy time
-- (PostgresStore.create_schema / PostgresDeduplicator.create_schema do so, idempotently).

-- section: idempotency_keys
-- One row per scoped key. state 'in_flight': token owns the lease until expires_at.
-- state 'done': the stored response, replayed until expires_at. A row past expires_at
-- counts as absent (begin takes it over); cleanup() deletes such rows.
CREATE TABLE IF NOT EXISTS {table} (
    key          text        PRIMARY KEY,
    fingerprint  text        NOT NULL,
    state        text        NOT NULL CHECK (state IN ('in_flight', 'done')),
    token        text,
    status       integer,
    headers      jsonb,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    CHECK ((state = 'in_flight') = (token IS NOT NULL)),
    CHECK ((state = 'done') = (status IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at);

-- section: processed_messages
-- Consumer de-duplication: one row per (consumer, message id) already handled.
CREATE TABLE IF NOT EXISTS {table} (
    consumer      text        NOT NULL,
    message_id    text        NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX IF NOT EXISTS {index} ON {table} (processed_at);
