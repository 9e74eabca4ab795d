//! The jobs read model: one row per job with its status, outcome and stored output.
//!
//! Each statement below is the set-based form of one step of [`schemas::lifecycle`]'s fold
//! ([`JobRecord::apply`], [`JobRecord::append_output`]), which documents the states; the two
//! must agree field for field (`tests/it/lifecycle.rs` checks them against each other). Stored
//! output is capped at [`OUTPUT_CAP_BYTES`] per stream. Readers use `read_models::jobs`.

use chrono::{DateTime, Utc};
use schemas::lifecycle::{AttemptError, JobStatus, OUTPUT_CAP_BYTES};
use schemas::{
    Event, ExecAttemptFailed, ExecCancelRequested, ExecFailed, ExecFinished, ExecStarted,
    JobRecord, OutputChunk, OutputStream,
};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

/// The cap as the statements bind it.
const OUTPUT_CAP: i32 = OUTPUT_CAP_BYTES as i32;

/// Inserts newly requested jobs, all in one statement.
pub(crate) async fn requested(
    tx: &mut Transaction<'_, Postgres>,
    jobs: &[JobRecord],
) -> sqlx::Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&JobRecord) -> serde_json::Value| jobs.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO jobs (id, tenant, device_id, actor, argv, env_keys, stdin_bytes, timeout_ms, status,
             requested_at, pty, queue_deadline, batch_id)
         SELECT r.id, r.tenant, r.device_id, r.actor,
                ARRAY(SELECT jsonb_array_elements_text(r.argv)), ARRAY(SELECT jsonb_array_elements_text(r.env_keys)),
                r.stdin_bytes, r.timeout_ms, $12, r.requested_at, r.pty, r.queue_deadline, r.batch_id
         FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::jsonb[], $6::jsonb[], $7::int[], $8::int[],
                     $9::timestamptz[], $10::bool[], $11::timestamptz[], $13::uuid[])
              AS r(id, tenant, device_id, actor, argv, env_keys, stdin_bytes, timeout_ms, requested_at, pty, queue_deadline, batch_id)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(jobs.iter().map(|j| j.id).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.tenant.clone()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.device_id).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.actor.clone()).collect::<Vec<_>>())
    .bind(col(|j| serde_json::json!(j.argv)))
    .bind(col(|j| serde_json::json!(j.env_keys)))
    .bind(jobs.iter().map(|j| j.stdin_bytes).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.timeout_ms).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.requested_at).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.pty).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.queue_deadline).collect::<Vec<_>>())
    .bind(JobStatus::Queued.as_str())
    .bind(jobs.iter().map(|j| j.batch_id).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Marks jobs (and their audit entries) sensitive: their output is for owners and
/// administrators only. Runs after the batch's inserts, so a request and this mark may come in
/// one batch; marking twice changes nothing.
pub(crate) async fn sensitive(
    tx: &mut Transaction<'_, Postgres>,
    jobs: &[Uuid],
) -> sqlx::Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE jobs SET sensitive = true WHERE id = ANY($1) AND NOT sensitive")
        .bind(jobs)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "UPDATE audit_entries SET sensitive = true
         WHERE job_id = ANY($1) AND action = 'exec' AND NOT sensitive",
    )
    .bind(jobs)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Marks jobs running. At most one start per job exists in the log (first-wins subject).
pub(crate) async fn started(
    tx: &mut Transaction<'_, Postgres>,
    started: &[(DateTime<Utc>, ExecStarted)],
) -> sqlx::Result<()> {
    if started.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE jobs SET status = $5, started_at = s.at, attempts = s.attempt, worker = s.worker
         FROM UNNEST($1::uuid[], $2::timestamptz[], $3::int[], $4::text[]) AS s(id, at, attempt, worker)
         WHERE jobs.id = s.id AND jobs.status = ANY($6)",
    )
    .bind(started.iter().map(|(_, e)| e.job_id.as_uuid()).collect::<Vec<_>>())
    .bind(started.iter().map(|(at, _)| *at).collect::<Vec<_>>())
    .bind(started.iter().map(|(_, e)| e.attempt as i32).collect::<Vec<_>>())
    .bind(started.iter().map(|(_, e)| e.worker.clone()).collect::<Vec<_>>())
    .bind(JobStatus::Running.as_str())
    // Like the fold: a start after the outcome changes nothing.
    .bind(
        JobStatus::ALL
            .iter()
            .filter(|s| !s.is_terminal())
            .map(|s| s.as_str())
            .collect::<Vec<_>>(),
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records normal exits.
pub(crate) async fn finished(
    tx: &mut Transaction<'_, Postgres>,
    finished: &[(DateTime<Utc>, ExecFinished)],
) -> sqlx::Result<()> {
    if finished.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE jobs SET status = $7, exit_status = f.exit_status, exit_signal = f.exit_signal,
             exit_signal_message = f.exit_signal_message, finished_at = f.at, duration_ms = f.duration_ms
         FROM UNNEST($1::uuid[], $2::int8[], $3::text[], $4::text[], $5::timestamptz[], $6::int8[])
              AS f(id, exit_status, exit_signal, exit_signal_message, at, duration_ms)
         WHERE jobs.id = f.id",
    )
    .bind(finished.iter().map(|(_, e)| e.job_id.as_uuid()).collect::<Vec<_>>())
    .bind(finished.iter().map(|(_, e)| e.exit_status.map(i64::from)).collect::<Vec<_>>())
    .bind(finished.iter().map(|(_, e)| e.exit_signal.clone()).collect::<Vec<_>>())
    .bind(finished.iter().map(|(_, e)| e.exit_signal_message.clone()).collect::<Vec<_>>())
    .bind(finished.iter().map(|(at, _)| *at).collect::<Vec<_>>())
    .bind(finished.iter().map(|(_, e)| e.duration_ms as i64).collect::<Vec<_>>())
    .bind(JobStatus::Finished.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records failures (timeouts, connect failures, cancels, expiries, lost workers).
pub(crate) async fn failed(
    tx: &mut Transaction<'_, Postgres>,
    failed: &[(DateTime<Utc>, ExecFailed)],
) -> sqlx::Result<()> {
    if failed.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE jobs SET status = f.status, error_code = f.code, error_message = f.message, finished_at = f.at,
             attempts = GREATEST(jobs.attempts, f.attempt),
             duration_ms = (EXTRACT(EPOCH FROM (f.at - jobs.started_at)) * 1000)::bigint
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::int[])
              AS f(id, status, code, message, at, attempt)
         WHERE jobs.id = f.id",
    )
    .bind(failed.iter().map(|(_, e)| e.job_id.as_uuid()).collect::<Vec<_>>())
    .bind(failed.iter().map(|(_, e)| e.code.status().as_str()).collect::<Vec<_>>())
    .bind(failed.iter().map(|(_, e)| e.code.as_str().to_owned()).collect::<Vec<_>>())
    .bind(failed.iter().map(|(_, e)| e.message.clone()).collect::<Vec<_>>())
    .bind(failed.iter().map(|(at, _)| *at).collect::<Vec<_>>())
    .bind(failed.iter().map(|(_, e)| e.attempt as i32).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Output of one job within a batch, concatenated in log order.
#[derive(Default)]
pub(crate) struct OutputDelta {
    pub tenant: String,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl OutputDelta {
    pub fn push(&mut self, chunk: &OutputChunk) {
        match chunk.stream {
            OutputStream::Stdout => self.stdout.extend_from_slice(&chunk.data),
            OutputStream::Stderr => self.stderr.extend_from_slice(&chunk.data),
        }
    }
}

/// Appends each job's batch of output to its stored output, up to the cap.
pub(crate) async fn output(
    tx: &mut Transaction<'_, Postgres>,
    deltas: &[(Uuid, OutputDelta)],
) -> sqlx::Result<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE jobs SET
             stdout = substring(stdout || o.out from 1 for $5),
             stdout_truncated = stdout_truncated OR octet_length(stdout) + octet_length(o.out) > $5,
             stderr = substring(stderr || o.err from 1 for $5),
             stderr_truncated = stderr_truncated OR octet_length(stderr) + octet_length(o.err) > $5
         FROM UNNEST($1::uuid[], $2::text[], $3::bytea[], $4::bytea[]) AS o(id, tenant, out, err)
         WHERE jobs.id = o.id AND jobs.tenant = o.tenant",
    )
    .bind(deltas.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(
        deltas
            .iter()
            .map(|(_, d)| d.tenant.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        deltas
            .iter()
            .map(|(_, d)| d.stdout.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        deltas
            .iter()
            .map(|(_, d)| d.stderr.clone())
            .collect::<Vec<_>>(),
    )
    .bind(OUTPUT_CAP)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn attempt_failed(
    tx: &mut Transaction<'_, Postgres>,
    event: &Event,
    e: &ExecAttemptFailed,
) -> sqlx::Result<()> {
    let entry =
        serde_json::to_value(AttemptError::of(event, e)).expect("an attempt error serialises");
    sqlx::query(
        "UPDATE jobs SET attempts = GREATEST(attempts, $2), attempt_errors = attempt_errors || jsonb_build_array($3::jsonb)
         WHERE id = $1",
    )
    .bind(e.job_id.as_uuid())
    .bind(e.attempt as i32)
    .bind(entry)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn cancel_requested(
    tx: &mut Transaction<'_, Postgres>,
    event: &Event,
    e: &ExecCancelRequested,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, $2) WHERE id = $1",
    )
    .bind(e.job_id.as_uuid())
    .bind(event.at.to_datetime())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
