//! The jobs read model: one row per job with its status, outcome and stored output.
//!
//! Status moves `queued` (ExecRequested) → `running` (ExecStarted) → a terminal status
//! (`finished`, `failed`, `timed_out`, `worker_lost`) set by the outcome event. Stored output
//! is capped at [`OUTPUT_CAP_BYTES`] per stream; past it the `*_truncated` flag is set and the
//! live stream on NATS remains the place to read everything.

use chrono::{DateTime, Utc};
use schemas::{
    Event, EventBody, ExecAttemptFailed, ExecCancelRequested, ExecFailed, ExecFinished,
    ExecRequested, ExecStarted, JobId, OutputChunk, OutputStream, TenantId,
};
use sqlx::{PgExecutor, Postgres, Transaction};
use uuid::Uuid;

/// Stored output cap per job and stream (stdout and stderr each).
pub const OUTPUT_CAP_BYTES: i32 = 1024 * 1024;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRecord {
    pub id: Uuid,
    pub tenant: String,
    pub device_id: Uuid,
    pub actor: Option<String>,
    pub argv: Vec<String>,
    pub env_keys: Vec<String>,
    pub stdin_bytes: i32,
    pub timeout_ms: i32,
    pub status: String,
    pub attempts: i32,
    pub attempt_errors: serde_json::Value,
    pub pty: bool,
    pub queue_deadline: DateTime<Utc>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub worker: Option<String>,
    pub exit_status: Option<i64>,
    pub exit_signal: Option<String>,
    pub exit_signal_message: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub requested_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
}

impl JobRecord {
    /// What a job looks like the moment it is accepted, before any worker touched it. The API
    /// answers with this when the projector has not caught up with a just-submitted job yet.
    pub fn queued(event: &Event, e: &ExecRequested) -> Self {
        Self {
            id: e.job_id.as_uuid(),
            tenant: event.tenant.to_string(),
            device_id: e.device_id.as_uuid(),
            actor: event.actor.as_ref().map(|a| a.0.clone()),
            argv: e.argv.clone(),
            env_keys: e.env.iter().map(|(k, _)| k.clone()).collect(),
            stdin_bytes: e.stdin.len() as i32,
            timeout_ms: e.timeout_ms as i32,
            status: "queued".into(),
            attempts: 0,
            attempt_errors: serde_json::Value::Array(Vec::new()),
            pty: e.pty.is_some(),
            queue_deadline: e.queue_deadline.to_datetime(),
            cancel_requested_at: None,
            worker: None,
            exit_status: None,
            exit_signal: None,
            exit_signal_message: None,
            error_code: None,
            error_message: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            requested_at: event.at.to_datetime(),
            started_at: None,
            finished_at: None,
            duration_ms: None,
        }
    }

    pub fn is_terminal(&self) -> bool {
        !matches!(self.status.as_str(), "queued" | "running")
    }

    /// Applies one later event of this job in memory, exactly as the batch statements below
    /// apply it in Postgres (the API folds a job it watched on the log this way, so both must
    /// agree; `tests/it/exec.rs` compares waited answers with reads field for field). Events of other jobs, and kinds
    /// that do not touch the job row, are ignored.
    pub fn apply(&mut self, event: &Event) {
        let at = event.at.to_datetime();
        let this = |job: JobId| job.as_uuid() == self.id;
        match &event.body {
            // Like the statement, a start after the outcome changes nothing.
            EventBody::ExecStarted(e) if this(e.job_id) && !self.is_terminal() => {
                self.status = "running".into();
                self.started_at = Some(at);
                self.attempts = e.attempt as i32;
                self.worker = Some(e.worker.clone());
            }
            EventBody::ExecFinished(e) if this(e.job_id) => {
                self.status = "finished".into();
                self.exit_status = e.exit_status.map(i64::from);
                self.exit_signal = e.exit_signal.clone();
                self.exit_signal_message = e.exit_signal_message.clone();
                self.finished_at = Some(at);
                self.duration_ms = Some(e.duration_ms as i64);
            }
            EventBody::ExecFailed(e) if this(e.job_id) => {
                self.status = e.code.status().into();
                self.error_code = Some(e.code.as_str().into());
                self.error_message = Some(e.message.clone());
                self.finished_at = Some(at);
                self.attempts = self.attempts.max(e.attempt as i32);
                // Postgres: (EXTRACT(EPOCH FROM at - started_at) * 1000)::bigint, which rounds
                // half away from zero.
                self.duration_ms = self.started_at.map(|started| {
                    let micros = (at - started).num_microseconds().unwrap_or(i64::MAX);
                    let millis = (micros.saturating_abs().saturating_add(500)) / 1000;
                    if micros < 0 { -millis } else { millis }
                });
            }
            EventBody::ExecAttemptFailed(e) if this(e.job_id) => {
                self.attempts = self.attempts.max(e.attempt as i32);
                if let serde_json::Value::Array(errors) = &mut self.attempt_errors {
                    errors.push(attempt_error(event, e));
                }
            }
            EventBody::ExecCancelRequested(e) if this(e.job_id) => {
                self.cancel_requested_at.get_or_insert(at);
            }
            _ => {}
        }
    }

    /// Appends a chunk of this job's output, up to [`OUTPUT_CAP_BYTES`] per stream, as the
    /// `output` statement does.
    pub fn append_output(&mut self, chunk: &OutputChunk) {
        let (stored, truncated) = match chunk.stream {
            OutputStream::Stdout => (&mut self.stdout, &mut self.stdout_truncated),
            OutputStream::Stderr => (&mut self.stderr, &mut self.stderr_truncated),
        };
        let cap = OUTPUT_CAP_BYTES as usize;
        if stored.len() + chunk.data.len() > cap {
            *truncated = true;
        }
        let room = cap.saturating_sub(stored.len());
        stored.extend_from_slice(&chunk.data[..chunk.data.len().min(room)]);
    }
}

/// One entry of a job's `attempt_errors`.
fn attempt_error(event: &Event, e: &ExecAttemptFailed) -> serde_json::Value {
    serde_json::json!({
        "attempt": e.attempt,
        "at": event.at.to_datetime(),
        "code": e.code.as_str(),
        "message": e.message,
        "retry_in_ms": e.retry_in_ms,
    })
}

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
             requested_at, pty, queue_deadline)
         SELECT r.id, r.tenant, r.device_id, r.actor,
                ARRAY(SELECT jsonb_array_elements_text(r.argv)), ARRAY(SELECT jsonb_array_elements_text(r.env_keys)),
                r.stdin_bytes, r.timeout_ms, 'queued', r.requested_at, r.pty, r.queue_deadline
         FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::jsonb[], $6::jsonb[], $7::int[], $8::int[],
                     $9::timestamptz[], $10::bool[], $11::timestamptz[])
              AS r(id, tenant, device_id, actor, argv, env_keys, stdin_bytes, timeout_ms, requested_at, pty, queue_deadline)
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
        "UPDATE jobs SET status = 'running', started_at = s.at, attempts = s.attempt, worker = s.worker
         FROM UNNEST($1::uuid[], $2::timestamptz[], $3::int[], $4::text[]) AS s(id, at, attempt, worker)
         WHERE jobs.id = s.id AND jobs.status IN ('queued', 'running')",
    )
    .bind(started.iter().map(|(_, e)| e.job_id.as_uuid()).collect::<Vec<_>>())
    .bind(started.iter().map(|(at, _)| *at).collect::<Vec<_>>())
    .bind(started.iter().map(|(_, e)| e.attempt as i32).collect::<Vec<_>>())
    .bind(started.iter().map(|(_, e)| e.worker.clone()).collect::<Vec<_>>())
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
        "UPDATE jobs SET status = 'finished', exit_status = f.exit_status, exit_signal = f.exit_signal,
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
    .bind(failed.iter().map(|(_, e)| e.code.status().to_owned()).collect::<Vec<_>>())
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
    .bind(OUTPUT_CAP_BYTES)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn attempt_failed(
    tx: &mut Transaction<'_, Postgres>,
    event: &Event,
    e: &ExecAttemptFailed,
) -> sqlx::Result<()> {
    let entry = attempt_error(event, e);
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

/// One job of one tenant; another tenant's job is simply not found.
pub async fn get(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    id: JobId,
) -> sqlx::Result<Option<JobRecord>> {
    sqlx::query_as("SELECT * FROM jobs WHERE id = $1 AND tenant = $2")
        .bind(id.as_uuid())
        .bind(tenant.as_str())
        .fetch_optional(db)
        .await
}

/// What `GET /v1/jobs` and a device's history can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobSort {
    RequestedAt,
    FinishedAt,
    Status,
    DurationMs,
}

impl JobSort {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "requested_at" => JobSort::RequestedAt,
            "finished_at" => JobSort::FinishedAt,
            "status" => JobSort::Status,
            "duration_ms" => JobSort::DurationMs,
            _ => return None,
        })
    }

    fn column(self) -> &'static str {
        match self {
            JobSort::RequestedAt => "requested_at",
            JobSort::FinishedAt => "finished_at",
            JobSort::Status => "status",
            JobSort::DurationMs => "duration_ms",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub device_id: Option<Uuid>,
    pub status: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// One page of a tenant's jobs (without their output), with the total count.
pub async fn list(
    db: &sqlx::PgPool,
    tenant: &TenantId,
    filter: &JobFilter,
    sort: JobSort,
    page: &crate::Page,
) -> sqlx::Result<(Vec<JobRecord>, i64)> {
    let push_filters = |q: &mut sqlx::QueryBuilder<Postgres>| {
        q.push(" WHERE tenant = ").push_bind(tenant.to_string());
        if let Some(device) = filter.device_id {
            q.push(" AND device_id = ").push_bind(device);
        }
        if let Some(status) = &filter.status {
            q.push(" AND status = ").push_bind(status.clone());
        }
        if let Some(from) = filter.from {
            q.push(" AND requested_at >= ").push_bind(from);
        }
        if let Some(to) = filter.to {
            q.push(" AND requested_at < ").push_bind(to);
        }
    };
    // Output is left out of lists: it can be a megabyte per job.
    const COLUMNS: &str = "id, tenant, device_id, actor, argv, env_keys, stdin_bytes, timeout_ms, status, attempts,
        attempt_errors, pty, queue_deadline, cancel_requested_at, worker, exit_status, exit_signal,
        exit_signal_message, error_code, error_message, '\\x'::bytea AS stdout, '\\x'::bytea AS stderr,
        stdout_truncated, stderr_truncated, requested_at, started_at, finished_at, duration_ms";
    page.fetch(db, "jobs", COLUMNS, sort.column(), push_filters)
        .await
}
