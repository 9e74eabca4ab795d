-- Read models folded from the event log. Only the projector writes these tables; every row
-- can be rebuilt by replaying the stream from sequence 1.

-- The last stream sequence applied, written in the same transaction as the changes it
-- covers: that is what makes projection exactly-once in effect.
CREATE TABLE projector_checkpoint (
    name        text PRIMARY KEY,
    stream_seq  bigint NOT NULL
);

CREATE TABLE devices (
    id              uuid PRIMARY KEY,
    tenant          text NOT NULL,
    name            text NOT NULL,
    host            text NOT NULL,
    port            integer NOT NULL,
    username        text NOT NULL,
    host_key        text NOT NULL,
    registered_by   text,
    registered_at   timestamptz NOT NULL,
    last_seen_at    timestamptz
);
CREATE INDEX devices_tenant_name ON devices (tenant, name);

CREATE TABLE jobs (
    id                   uuid PRIMARY KEY,
    tenant               text NOT NULL,
    device_id            uuid NOT NULL,
    actor                text,
    argv                 text[] NOT NULL,
    -- Only the names: values may be secrets and read models are widely readable.
    env_keys             text[] NOT NULL,
    stdin_bytes          integer NOT NULL,
    timeout_ms           integer NOT NULL,
    status               text NOT NULL,
    attempts             integer NOT NULL DEFAULT 0,
    -- One object per failed attempt before the command began: {attempt, at, code, message, retry_in_ms}.
    attempt_errors       jsonb NOT NULL DEFAULT '[]',
    pty                  boolean NOT NULL DEFAULT false,
    queue_deadline       timestamptz NOT NULL,
    cancel_requested_at  timestamptz,
    worker               text,
    exit_status          bigint,
    exit_signal          text,
    exit_signal_message  text,
    error_code           text,
    error_message        text,
    stdout               bytea NOT NULL DEFAULT '\x',
    stderr               bytea NOT NULL DEFAULT '\x',
    stdout_truncated     boolean NOT NULL DEFAULT false,
    stderr_truncated     boolean NOT NULL DEFAULT false,
    requested_at         timestamptz NOT NULL,
    started_at           timestamptz,
    finished_at          timestamptz,
    duration_ms          bigint
);
CREATE INDEX jobs_tenant_device_requested ON jobs (tenant, device_id, requested_at DESC);
CREATE INDEX jobs_tenant_requested ON jobs (tenant, requested_at DESC);
