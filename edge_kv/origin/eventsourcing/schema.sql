-- edge_kv event store tables. {events}, {positions}, {snapshots}, {checkpoints},
-- {stream_version} and {notify_fn} are filled in (quoted) by
-- edge_kv.origin.eventsourcing._schema.schema_statements; EventStore.migrate() runs them,
-- idempotently, once at deploy time. Nothing is created at import.

-- section: store
-- The events. position: the global position, 1, 2, 3, ... with no holes, assigned in
-- commit order (see {positions}). version: the event's number in its stream, 1, 2, 3,
-- ...; the unique constraint on (stream, version) is what refuses a concurrent append.
CREATE TABLE IF NOT EXISTS {events} (
    position        bigint      PRIMARY KEY,
    stream          text        NOT NULL,
    version         bigint      NOT NULL CHECK (version >= 1),
    event_id        uuid        NOT NULL,
    type            text        NOT NULL,
    schema_version  integer     NOT NULL DEFAULT 1,
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT jsonb_build_object(),
    correlation_id  text,
    causation_id    text,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT {stream_version} UNIQUE (stream, version)
);
-- The last position handed out: one row. An append updates it in its first statement
-- and so holds its row lock until it commits or rolls back: position assignment and
-- commit are serialised, so commit order is position order and a rolled-back append
-- gives its positions back.
CREATE TABLE IF NOT EXISTS {positions} (
    id        boolean PRIMARY KEY DEFAULT true CHECK (id),
    position  bigint  NOT NULL
);
INSERT INTO {positions} (id, position) VALUES (true, 0) ON CONFLICT (id) DO NOTHING;
-- The latest snapshot of each stream (a cache: deleting rows only slows loading).
CREATE TABLE IF NOT EXISTS {snapshots} (
    stream          text        PRIMARY KEY,
    version         bigint      NOT NULL,
    schema_version  integer     NOT NULL,
    state           jsonb       NOT NULL,
    taken_at        timestamptz NOT NULL DEFAULT now()
);
-- One row per projection: the last global position applied to its read model, written in
-- the same transaction as the read-model update.
CREATE TABLE IF NOT EXISTS {checkpoints} (
    name        text        PRIMARY KEY,
    position    bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- NOTIFY once per appending transaction (identical payloads fold into one) so projection
-- runners wake up; the channel is the trigger's argument.
CREATE OR REPLACE FUNCTION {notify_fn}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_ARGV[0], '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS notify_append ON {events};
CREATE TRIGGER notify_append AFTER INSERT ON {events}
    FOR EACH STATEMENT EXECUTE FUNCTION {notify_fn}({channel});
