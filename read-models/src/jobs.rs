//! Jobs: one job of a tenant, and pages of a tenant's jobs.

use chrono::{DateTime, Utc};
use schemas::{AttemptError, JobId, JobRecord, JobStatus, TenantId};
use sqlx::types::Json;
use sqlx::{PgExecutor, Postgres};
use uuid::Uuid;

/// A row of `jobs` as Postgres returns it; callers get the [`JobRecord`] it describes.
#[derive(sqlx::FromRow)]
struct JobRow {
    id: Uuid,
    tenant: String,
    device_id: Uuid,
    actor: Option<String>,
    argv: Vec<String>,
    env_keys: Vec<String>,
    stdin_bytes: i32,
    timeout_ms: i32,
    #[sqlx(try_from = "String")]
    status: JobStatus,
    attempts: i32,
    attempt_errors: Json<Vec<AttemptError>>,
    pty: bool,
    queue_deadline: DateTime<Utc>,
    cancel_requested_at: Option<DateTime<Utc>>,
    worker: Option<String>,
    exit_status: Option<i64>,
    exit_signal: Option<String>,
    exit_signal_message: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stdout_truncated: bool,
    stderr_truncated: bool,
    requested_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    duration_ms: Option<i64>,
    sensitive: bool,
    batch_id: Option<Uuid>,
}

impl From<JobRow> for JobRecord {
    fn from(row: JobRow) -> Self {
        Self {
            id: row.id,
            tenant: row.tenant,
            device_id: row.device_id,
            actor: row.actor,
            argv: row.argv,
            env_keys: row.env_keys,
            stdin_bytes: row.stdin_bytes,
            timeout_ms: row.timeout_ms,
            status: row.status,
            attempts: row.attempts,
            attempt_errors: row.attempt_errors.0,
            pty: row.pty,
            queue_deadline: row.queue_deadline,
            cancel_requested_at: row.cancel_requested_at,
            worker: row.worker,
            exit_status: row.exit_status,
            exit_signal: row.exit_signal,
            exit_signal_message: row.exit_signal_message,
            error_code: row.error_code,
            error_message: row.error_message,
            stdout: row.stdout,
            stderr: row.stderr,
            stdout_truncated: row.stdout_truncated,
            stderr_truncated: row.stderr_truncated,
            requested_at: row.requested_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            duration_ms: row.duration_ms,
            sensitive: row.sensitive,
            batch_id: row.batch_id,
        }
    }
}

/// One job of one tenant; another tenant's job is simply not found.
pub async fn get(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    id: JobId,
) -> sqlx::Result<Option<JobRecord>> {
    let row: Option<JobRow> = sqlx::query_as("SELECT * FROM jobs WHERE id = $1 AND tenant = $2")
        .bind(id.as_uuid())
        .bind(tenant.as_str())
        .fetch_optional(db)
        .await?;
    Ok(row.map(JobRecord::from))
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
    /// Only the jobs of this batch.
    pub batch_id: Option<Uuid>,
    /// As callers spell it; a spelling no job has matches nothing.
    pub status: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Jobs on any of these devices (`Some(vec![])` matches nothing).
    pub device_ids: Option<Vec<Uuid>>,
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
        if let Some(batch) = filter.batch_id {
            q.push(" AND batch_id = ").push_bind(batch);
        }
        if let Some(status) = &filter.status {
            q.push(" AND status = ").push_bind(status.clone());
        }
        if let Some(devices) = &filter.device_ids {
            q.push(" AND device_id = ANY(")
                .push_bind(devices.clone())
                .push(")");
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
        stdout_truncated, stderr_truncated, requested_at, started_at, finished_at, duration_ms, sensitive, batch_id";
    let (rows, total): (Vec<JobRow>, i64) = page
        .fetch(
            &mut *db.acquire().await?,
            "jobs",
            COLUMNS,
            sort.column(),
            push_filters,
        )
        .await?;
    Ok((rows.into_iter().map(JobRecord::from).collect(), total))
}
