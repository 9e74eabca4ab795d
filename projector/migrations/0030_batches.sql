-- Fan-out (issue 14): one row per batch, and each job names its batch.
CREATE TABLE batches (
    id                   uuid PRIMARY KEY,
    tenant               text NOT NULL,
    actor                text,
    command              text NOT NULL,
    selector             text NOT NULL,
    -- [{device_id, name, job_id, skipped}] as resolved at submit time.
    targets              jsonb NOT NULL,
    target_count         integer NOT NULL,
    job_count            integer NOT NULL,
    max_concurrency      text NOT NULL,
    max_errors           text NOT NULL,
    -- Errors past this trip the batch (max_errors resolved against job_count).
    error_threshold      integer NOT NULL,
    requested_at         timestamptz NOT NULL,
    cancel_requested_at  timestamptz
);
CREATE INDEX batches_tenant_requested ON batches (tenant, requested_at DESC);

ALTER TABLE jobs ADD COLUMN batch_id uuid;
CREATE INDEX jobs_batch ON jobs (batch_id, status) WHERE batch_id IS NOT NULL;

ALTER TABLE audit_entries ADD COLUMN batch_id uuid;
