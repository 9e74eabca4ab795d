//! The jobs read model: one row per job with its status, outcome and stored output.
//!
//! Status moves `queued` (ExecRequested) → `running` (ExecStarted) → a terminal status
//! (`finished`, `failed`, `timed_out`, `worker_lost`) set by the outcome event. Stored output
//! is capped at [`OUTPUT_CAP_BYTES`] per stream; past it the `*_truncated` flag is set and the
//! live stream on NATS remains the place to read everything.

use chrono::{DateTime, Utc};
use schemas::{
    Event, ExecAttemptFailed, ExecCancelRequested, ExecFailed, ExecFinished, ExecRequested,
    ExecStarted, JobId, OutputChunk, OutputStream, TenantId,
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
}

pub(crate) async fn requested(
    tx: &mut Transaction<'_, Postgres>,
    event: &Event,
    e: &ExecRequested,
) -> sqlx::Result<()> {
    let job = JobRecord::queued(event, e);
    sqlx::query(
        "INSERT INTO jobs (id, tenant, device_id, actor, argv, env_keys, stdin_bytes, timeout_ms, status, requested_at,
             pty, queue_deadline)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(job.id)
    .bind(&job.tenant)
    .bind(job.device_id)
    .bind(&job.actor)
    .bind(&job.argv)
    .bind(&job.env_keys)
    .bind(job.stdin_bytes)
    .bind(job.timeout_ms)
    .bind(&job.status)
    .bind(job.requested_at)
    .bind(job.pty)
    .bind(job.queue_deadline)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn started(
    tx: &mut Transaction<'_, Postgres>,
    event: &Event,
    e: &ExecStarted,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE jobs SET status = 'running', started_at = $2, attempts = $3, worker = $4
         WHERE id = $1 AND status IN ('queued', 'running')",
    )
    .bind(e.job_id.as_uuid())
    .bind(event.at.to_datetime())
    .bind(e.attempt as i32)
    .bind(&e.worker)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn finished(
    tx: &mut Transaction<'_, Postgres>,
    event: &Event,
    e: &ExecFinished,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE jobs SET status = 'finished', exit_status = $2, exit_signal = $3, exit_signal_message = $4,
             finished_at = $5, duration_ms = $6
         WHERE id = $1",
    )
    .bind(e.job_id.as_uuid())
    .bind(e.exit_status.map(i64::from))
    .bind(&e.exit_signal)
    .bind(&e.exit_signal_message)
    .bind(event.at.to_datetime())
    .bind(e.duration_ms as i64)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn failed(
    tx: &mut Transaction<'_, Postgres>,
    event: &Event,
    e: &ExecFailed,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE jobs SET status = $2, error_code = $3, error_message = $4, finished_at = $5,
             attempts = GREATEST(attempts, $6),
             duration_ms = (EXTRACT(EPOCH FROM ($5 - started_at)) * 1000)::bigint
         WHERE id = $1",
    )
    .bind(e.job_id.as_uuid())
    .bind(e.code.status())
    .bind(e.code.as_str())
    .bind(&e.message)
    .bind(event.at.to_datetime())
    .bind(e.attempt as i32)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn attempt_failed(
    tx: &mut Transaction<'_, Postgres>,
    event: &Event,
    e: &ExecAttemptFailed,
) -> sqlx::Result<()> {
    let entry = serde_json::json!({
        "attempt": e.attempt,
        "at": event.at.to_datetime(),
        "code": e.code.as_str(),
        "message": e.message,
        "retry_in_ms": e.retry_in_ms,
    });
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

/// Appends a chunk to the stored output, up to the cap.
pub(crate) async fn output(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    job: Uuid,
    chunk: &OutputChunk,
) -> sqlx::Result<()> {
    let sql = match chunk.stream {
        OutputStream::Stdout => {
            "UPDATE jobs SET stdout = substring(stdout || $3 from 1 for $4),
                 stdout_truncated = stdout_truncated OR octet_length(stdout) + octet_length($3) > $4
             WHERE id = $1 AND tenant = $2"
        }
        OutputStream::Stderr => {
            "UPDATE jobs SET stderr = substring(stderr || $3 from 1 for $4),
                 stderr_truncated = stderr_truncated OR octet_length(stderr) + octet_length($3) > $4
             WHERE id = $1 AND tenant = $2"
        }
    };
    sqlx::query(sql)
        .bind(job)
        .bind(tenant)
        .bind(chunk.data.as_ref())
        .bind(OUTPUT_CAP_BYTES)
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
    let mut count = sqlx::QueryBuilder::new("SELECT count(*) FROM jobs");
    push_filters(&mut count);
    let total: i64 = count.build_query_scalar().fetch_one(db).await?;
    // Output is left out of lists: it can be a megabyte per job.
    let mut rows = sqlx::QueryBuilder::new(
        "SELECT id, tenant, device_id, actor, argv, env_keys, stdin_bytes, timeout_ms, status, attempts,
             attempt_errors, pty, queue_deadline, cancel_requested_at, worker, exit_status, exit_signal,
             exit_signal_message, error_code, error_message, '\\x'::bytea AS stdout, '\\x'::bytea AS stderr,
             stdout_truncated, stderr_truncated, requested_at, started_at, finished_at, duration_ms
         FROM jobs",
    );
    push_filters(&mut rows);
    let direction = if page.ascending { "ASC" } else { "DESC" };
    rows.push(format_args!(
        " ORDER BY {} {direction} NULLS LAST, id {direction}",
        sort.column()
    ));
    rows.push(" LIMIT ")
        .push_bind(page.per_page)
        .push(" OFFSET ")
        .push_bind(page.offset());
    let records = rows.build_query_as().fetch_all(db).await?;
    Ok((records, total))
}
