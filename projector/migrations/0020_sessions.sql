-- Sessions: every SSH channel a worker opened (exec jobs, interactive shells), and their
-- recordings. `session_frames` is partitioned by day on `at` (the time of the batch event) so
-- retention drops whole partitions, as for the audit trail; the projector creates partitions
-- as batches need them and ahead of time.
CREATE TABLE sessions (
    tenant          text NOT NULL,
    id              uuid NOT NULL,
    device_id       uuid NOT NULL,
    job_id          uuid,
    actor           text,
    username        text NOT NULL,
    type            text NOT NULL,
    term            text,
    cols            integer NOT NULL,
    rows            integer NOT NULL,
    started_at      timestamptz NOT NULL,
    ended_at        timestamptz,
    recorded        boolean NOT NULL,
    input_recorded  boolean NOT NULL,
    -- Frame bytes recorded so far (the end event's count once ended).
    bytes           bigint NOT NULL DEFAULT 0,
    truncated       boolean NOT NULL DEFAULT false,
    end_reason      text,
    exit_status     bigint,
    worker          text NOT NULL,
    PRIMARY KEY (tenant, id)
);

CREATE INDEX sessions_tenant_started ON sessions (tenant, started_at DESC);
CREATE INDEX sessions_job ON sessions (job_id);

CREATE TABLE session_frames (
    at          timestamptz NOT NULL,
    tenant      text NOT NULL,
    session_id  uuid NOT NULL,
    batch       integer NOT NULL,
    idx         integer NOT NULL,
    offset_us   bigint NOT NULL,
    kind        text NOT NULL,
    data        bytea NOT NULL,
    PRIMARY KEY (at, session_id, batch, idx)
) PARTITION BY RANGE (at);

CREATE INDEX session_frames_session ON session_frames (tenant, session_id, batch, idx);
