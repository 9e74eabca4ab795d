//! Batches (fan-out): a batch's row, its jobs' counts per status, and its aggregate status.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemas::{JobStatus, TenantId};
use sqlx::PgPool;
use uuid::Uuid;

/// A row of `batches`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BatchRow {
    pub id: Uuid,
    pub tenant: String,
    pub actor: Option<String>,
    pub command: String,
    pub selector: String,
    pub targets: sqlx::types::Json<serde_json::Value>,
    pub target_count: i32,
    pub job_count: i32,
    pub max_concurrency: String,
    pub max_errors: String,
    pub error_threshold: i32,
    pub requested_at: DateTime<Utc>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
}

/// What a batch's jobs add up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchTally {
    /// Jobs per status; jobs not in the read model yet count as queued.
    pub by_status: BTreeMap<JobStatus, i64>,
    /// Errors as `max_errors` counts them: finished with a non-zero exit (or a signal), and
    /// timed out.
    pub errors: i64,
    pub timed_out: i64,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl BatchTally {
    pub fn count(&self, status: JobStatus) -> i64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    pub fn open(&self) -> i64 {
        self.count(JobStatus::Queued) + self.count(JobStatus::Running)
    }
}

/// A batch's aggregate status, by SSM's rules (README, "Fan-out"), in this order:
/// 1. `in_progress` while any job is queued or running;
/// 2. `cancelled` if a cancel was requested;
/// 3. `failed` (or `timed_out` when every error was a timeout) if the errors exceeded
///    `max_errors`;
/// 4. `success` if every target finished with exit status 0 (no target skipped);
/// 5. `incomplete` otherwise: errors within `max_errors`, skipped or unreachable devices,
///    lost workers, expired jobs.
pub fn aggregate(
    tally: &BatchTally,
    error_threshold: i64,
    target_count: i64,
    cancel_requested: bool,
) -> &'static str {
    if tally.open() > 0 {
        "in_progress"
    } else if cancel_requested {
        "cancelled"
    } else if tally.errors > error_threshold {
        if tally.timed_out == tally.errors {
            "timed_out"
        } else {
            "failed"
        }
    } else if tally.count(JobStatus::Finished) - tally.errors == target_count {
        "success"
    } else {
        "incomplete"
    }
}

/// A batch and its tally, read in one snapshot: the row's `cancel_requested_at` and the jobs'
/// statuses are of the same moment, so the status never mixes a row read before a projector
/// commit with jobs read after it (a cancelled batch shown `incomplete`).
pub async fn get_tallied(
    db: &PgPool,
    tenant: &TenantId,
    id: Uuid,
) -> sqlx::Result<Option<(BatchRow, BatchTally)>> {
    let mut tx = crate::snapshot(db).await?;
    let Some(row) = get(&mut tx, tenant, id).await? else {
        return Ok(None);
    };
    let mut tallies = tallies(&mut tx, tenant, &[(row.id, i64::from(row.job_count))]).await?;
    tx.commit().await?;
    let tally = tallies.remove(&row.id).unwrap_or_default();
    Ok(Some((row, tally)))
}

/// One page of a tenant's batches with their tallies, all read in one snapshot (see
/// [`get_tallied`]), and the total.
pub async fn list_tallied(
    db: &PgPool,
    tenant: &TenantId,
    page: &crate::Page,
) -> sqlx::Result<(Vec<(BatchRow, BatchTally)>, i64)> {
    let mut tx = crate::snapshot(db).await?;
    let (rows, total) = list(&mut tx, tenant, page).await?;
    let counts: Vec<(Uuid, i64)> = rows
        .iter()
        .map(|r| (r.id, i64::from(r.job_count)))
        .collect();
    let mut tallies = tallies(&mut tx, tenant, &counts).await?;
    tx.commit().await?;
    let rows = rows
        .into_iter()
        .map(|row| {
            let tally = tallies.remove(&row.id).unwrap_or_default();
            (row, tally)
        })
        .collect();
    Ok((rows, total))
}

async fn get(
    db: &mut sqlx::PgConnection,
    tenant: &TenantId,
    id: Uuid,
) -> sqlx::Result<Option<BatchRow>> {
    sqlx::query_as("SELECT * FROM batches WHERE id = $1 AND tenant = $2")
        .bind(id)
        .bind(tenant.as_str())
        .fetch_optional(db)
        .await
}

/// The tallies of some batches (of one tenant), by batch id; `job_counts` are the batches'
/// job counts, so that jobs the projector has not folded yet count as queued.
async fn tallies(
    db: &mut sqlx::PgConnection,
    tenant: &TenantId,
    job_counts: &[(Uuid, i64)],
) -> sqlx::Result<BTreeMap<Uuid, BatchTally>> {
    let ids: Vec<Uuid> = job_counts.iter().map(|(id, _)| *id).collect();
    type Row = (
        Uuid,
        String,
        i64,
        i64,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT batch_id, status, count(*),
                    count(*) FILTER (WHERE status = 'finished' AND exit_status IS DISTINCT FROM 0),
                    min(started_at), max(finished_at)
             FROM jobs WHERE tenant = $1 AND batch_id = ANY($2)
             GROUP BY batch_id, status",
    )
    .bind(tenant.as_str())
    .bind(&ids)
    .fetch_all(db)
    .await?;
    let mut out: BTreeMap<Uuid, BatchTally> = BTreeMap::new();
    for (batch, status, count, failed_exits, started, finished) in rows {
        let Some(status) = JobStatus::parse(&status) else {
            continue;
        };
        let tally = out.entry(batch).or_default();
        *tally.by_status.entry(status).or_default() += count;
        tally.errors += failed_exits;
        if status == JobStatus::TimedOut {
            tally.errors += count;
            tally.timed_out += count;
        }
        tally.started_at = match (tally.started_at, started) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tally.finished_at = match (tally.finished_at, finished) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    for (id, jobs) in job_counts {
        let tally = out.entry(*id).or_default();
        let seen: i64 = tally.by_status.values().sum();
        if seen < *jobs {
            *tally.by_status.entry(JobStatus::Queued).or_default() += jobs - seen;
        }
        if tally.open() > 0 {
            tally.finished_at = None;
        }
    }
    Ok(out)
}

/// One page of a tenant's batches, newest first unless the page says otherwise.
async fn list(
    db: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    tenant: &TenantId,
    page: &crate::Page,
) -> sqlx::Result<(Vec<BatchRow>, i64)> {
    page.fetch(db, "batches", "*", "requested_at", |q| {
        q.push(" WHERE tenant = ").push_bind(tenant.to_string());
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(pairs: &[(JobStatus, i64)], errors: i64, timed_out: i64) -> BatchTally {
        BatchTally {
            by_status: pairs.iter().copied().collect(),
            errors,
            timed_out,
            ..Default::default()
        }
    }

    #[test]
    fn the_aggregate_follows_the_documented_order() {
        use JobStatus::*;
        assert_eq!(
            aggregate(&tally(&[(Running, 1), (Finished, 3)], 0, 0), 0, 4, true),
            "in_progress"
        );
        assert_eq!(
            aggregate(&tally(&[(Canceled, 2), (Finished, 2)], 0, 0), 0, 4, true),
            "cancelled"
        );
        assert_eq!(
            aggregate(&tally(&[(Finished, 4)], 1, 0), 0, 4, false),
            "failed"
        );
        assert_eq!(
            aggregate(&tally(&[(TimedOut, 1), (Terminated, 3)], 1, 1), 0, 4, false),
            "timed_out"
        );
        assert_eq!(
            aggregate(&tally(&[(Finished, 4)], 1, 0), 1, 4, false),
            "incomplete"
        );
        assert_eq!(
            aggregate(&tally(&[(Finished, 4)], 0, 0), 0, 4, false),
            "success"
        );
        assert_eq!(
            aggregate(&tally(&[(Finished, 3)], 0, 0), 0, 4, false),
            "incomplete"
        );
        assert_eq!(
            aggregate(&tally(&[(Finished, 3), (Failed, 1)], 0, 0), 0, 4, false),
            "incomplete"
        );
    }
}
