-- The audit trail: one entry per exec request (accepted or rejected, then its outcome) and
-- per administrative action. Partitioned by day on `at` so retention drops whole partitions
-- instead of running a table-wide DELETE. The projector creates partitions as events need
-- them and ahead of time, and drops the expired ones on a schedule.
CREATE TABLE audit_entries (
    at                timestamptz NOT NULL,
    id                uuid NOT NULL,
    tenant            text NOT NULL,
    actor             text,
    action            text NOT NULL,
    device_id         uuid,
    job_id            uuid,
    command           text,
    outcome           text NOT NULL,
    exit_status       bigint,
    detail            text,
    -- The first 10 KiB of each stream; `output_truncated` says whether there was more.
    stdout            bytea,
    stderr            bytea,
    output_truncated  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (at, id)
) PARTITION BY RANGE (at);

CREATE INDEX audit_entries_tenant_at ON audit_entries (tenant, at DESC);
CREATE INDEX audit_entries_job ON audit_entries (job_id);
