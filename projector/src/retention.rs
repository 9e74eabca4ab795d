//! How long read models keep things, and the task that enforces it.
//!
//! Two periods, both 90 days by default:
//! - the **job retention** (`SSHQ_JOB_RETENTION_S`): a job's events and output carry it as
//!   their `Nats-TTL` and leave the log on their own; here the job's row (with its output) and
//!   the audit entries about it (`exec`, `exec_cancel`, refusals) go after the same period;
//! - the **audit retention** (`SSHQ_AUDIT_RETENTION_DAYS`): everything else in the audit trail
//!   (devices, keys, tenants), whose events stay in the log for ever.
//!
//! Whatever is past its period is also never written by the fold, so a rebuild from the log
//! gives what the live read models hold after retention ran.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;

use crate::audit;

#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub audit: Duration,
    pub jobs: Duration,
}

impl Retention {
    /// Entries of `action` older than this are gone (and not written).
    pub fn audit_cutoff(&self, now: DateTime<Utc>, action: &str) -> DateTime<Utc> {
        if audit::is_job_action(action) {
            now - self.audit.min(self.jobs)
        } else {
            now - self.audit
        }
    }

    /// Jobs requested before this are gone (and not written).
    pub fn job_cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - self.jobs
    }
}

/// What one round of retention removed.
#[derive(Debug, Default)]
pub struct Removed {
    pub audit_partitions: Vec<chrono::NaiveDate>,
    pub jobs: u64,
    pub job_audit_entries: u64,
    pub sessions: crate::sessions::Removed,
}

/// Creates audit partitions ahead, drops expired ones, and deletes expired jobs (and, when
/// jobs are kept for less than the audit, their audit entries).
pub async fn enforce(
    pool: &PgPool,
    now: DateTime<Utc>,
    retention: Retention,
) -> sqlx::Result<Removed> {
    let audit_partitions = audit::enforce_retention(pool, now, retention.audit).await?;
    sqlx::query("DELETE FROM batches WHERE requested_at < $1")
        .bind(retention.job_cutoff(now))
        .execute(pool)
        .await?;
    let jobs = sqlx::query("DELETE FROM jobs WHERE requested_at < $1")
        .bind(retention.job_cutoff(now))
        .execute(pool)
        .await?
        .rows_affected();
    let job_audit_entries = if retention.jobs < retention.audit {
        audit::delete_job_entries_before(pool, retention.job_cutoff(now)).await?
    } else {
        0
    };
    let sessions = crate::sessions::enforce_retention(pool, now, retention.jobs).await?;
    Ok(Removed {
        audit_partitions,
        jobs,
        job_audit_entries,
        sessions,
    })
}
