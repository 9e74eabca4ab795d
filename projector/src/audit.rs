//! The audit trail read model and its retention.
//!
//! Rows live in daily partitions of `audit_entries` ([`crate::partitions`]). The partition an
//! event needs is created (inside the applying transaction, so a rolled-back batch leaves
//! nothing behind); [`enforce_retention`] creates partitions a week ahead and drops those
//! wholly older than the retention period — `DROP TABLE` on a partition, never a `DELETE`.
//! Events older than the retention period are not written at all, so replaying the log does
//! not resurrect what retention removed.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use schemas::{
    BatchId, DeviceConfig, Event, ExecCancelRequested, ExecRejected, ExecRequested, PtySize,
};
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};

use crate::partitions::DailyPartitions;
use uuid::Uuid;

/// Output kept per stream in an audit entry (Scalelite's 10 KB).
pub const AUDIT_OUTPUT_BYTES: i32 = 10 * 1024;

/// The audit trail's daily partitions.
pub const PARTITIONS: DailyPartitions = DailyPartitions("audit_entries");

/// The partitions that exist, oldest first.
pub async fn partitions(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<NaiveDate>> {
    PARTITIONS.list(db).await
}

/// Creates partitions for the next week and drops every partition that ends before
/// `now - retention`. Returns the days dropped.
pub async fn enforce_retention(
    pool: &PgPool,
    now: DateTime<Utc>,
    retention: Duration,
) -> sqlx::Result<Vec<NaiveDate>> {
    let mut tx = pool.begin().await?;
    let dropped = PARTITIONS.maintain(&mut tx, now, retention).await?;
    tx.commit().await?;
    Ok(dropped)
}

/// Whether an audit action is about a job (and so ages out with the job retention).
pub fn is_job_action(action: &str) -> bool {
    matches!(action, "exec" | "exec_cancel")
}

/// Deletes the entries about jobs from before `cutoff`: only used when jobs are kept for less
/// than the audit (whole partitions are dropped otherwise).
pub async fn delete_job_entries_before(pool: &PgPool, cutoff: DateTime<Utc>) -> sqlx::Result<u64> {
    Ok(
        sqlx::query(
            "DELETE FROM audit_entries WHERE at < $1 AND action IN ('exec', 'exec_cancel')",
        )
        .bind(cutoff)
        .execute(pool)
        .await?
        .rows_affected(),
    )
}

/// The audit entries a batch adds, collected and then written in one statement. Entries older
/// than their retention period are not written.
pub(crate) struct AuditRows {
    retention: crate::retention::Retention,
    now: DateTime<Utc>,
    at: Vec<DateTime<Utc>>,
    id: Vec<Uuid>,
    tenant: Vec<String>,
    actor: Vec<Option<String>>,
    action: Vec<&'static str>,
    device_id: Vec<Option<Uuid>>,
    job_id: Vec<Option<Uuid>>,
    command: Vec<Option<String>>,
    outcome: Vec<&'static str>,
    detail: Vec<Option<String>>,
    env_keys: Vec<Option<serde_json::Value>>,
    pty_term: Vec<Option<String>>,
    pty_cols: Vec<Option<i32>>,
    pty_rows: Vec<Option<i32>>,
    stdin_bytes: Vec<Option<i32>>,
    batch_id: Vec<Option<Uuid>>,
}

/// What an exec request asked for besides its argv, as far as the audit may show it: the
/// environment's names (values may be secrets), the pseudo-terminal, and the length of stdin.
pub(crate) struct ExecShape {
    pub env_keys: Vec<String>,
    pub pty: Option<PtySize>,
    pub stdin_bytes: i32,
}

impl ExecShape {
    fn of(e: &ExecRequested) -> Self {
        Self {
            env_keys: e.env.iter().map(|(name, _)| name.clone()).collect(),
            pty: e.pty.clone(),
            stdin_bytes: i32::try_from(e.stdin.len()).unwrap_or(i32::MAX),
        }
    }
}

pub(crate) struct Entry {
    pub id: Uuid,
    pub action: &'static str,
    pub device_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub command: Option<String>,
    pub outcome: &'static str,
    pub detail: Option<String>,
    /// Exec requests only.
    pub exec: Option<ExecShape>,
    /// The fan-out batch the entry is about (a batch, or one of its jobs).
    pub batch: Option<Uuid>,
}

impl AuditRows {
    pub fn new(retention: crate::retention::Retention, now: DateTime<Utc>) -> Self {
        Self {
            retention,
            now,
            at: Vec::new(),
            id: Vec::new(),
            tenant: Vec::new(),
            actor: Vec::new(),
            action: Vec::new(),
            device_id: Vec::new(),
            job_id: Vec::new(),
            command: Vec::new(),
            outcome: Vec::new(),
            detail: Vec::new(),
            env_keys: Vec::new(),
            pty_term: Vec::new(),
            pty_cols: Vec::new(),
            pty_rows: Vec::new(),
            stdin_bytes: Vec::new(),
            batch_id: Vec::new(),
        }
    }

    pub fn push(&mut self, event: &Event, entry: Entry) {
        let at = event.at.to_datetime();
        if at < self.retention.audit_cutoff(self.now, entry.action) {
            return;
        }
        self.at.push(at);
        self.id.push(entry.id);
        self.tenant.push(event.tenant.to_string());
        self.actor.push(event.actor.as_ref().map(|a| a.0.clone()));
        self.action.push(entry.action);
        self.device_id.push(entry.device_id);
        self.job_id.push(entry.job_id);
        self.command.push(entry.command);
        self.outcome.push(entry.outcome);
        self.detail.push(entry.detail);
        let exec = entry.exec.as_ref();
        let pty = exec.and_then(|x| x.pty.as_ref());
        let dimension = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        self.env_keys
            .push(exec.map(|x| serde_json::json!(x.env_keys)));
        self.pty_term.push(pty.map(|p| p.term.clone()));
        self.pty_cols.push(pty.map(|p| dimension(p.cols)));
        self.pty_rows.push(pty.map(|p| dimension(p.rows)));
        self.stdin_bytes.push(exec.map(|x| x.stdin_bytes));
        self.batch_id.push(entry.batch);
    }

    /// A job accepted; a job of a batch names its batch (`batch_id`).
    pub fn exec_requested(&mut self, event: &Event, e: &ExecRequested, batch: Option<BatchId>) {
        self.push(
            event,
            Entry {
                id: e.job_id.as_uuid(),
                action: "exec",
                device_id: Some(e.device_id.as_uuid()),
                job_id: Some(e.job_id.as_uuid()),
                command: Some(display_command(&e.argv)),
                outcome: "accepted",
                detail: None,
                exec: Some(ExecShape::of(e)),
                batch: batch.map(|b| b.as_uuid()),
            },
        );
    }

    /// A fan-out submitted or canceled (its jobs have entries of their own).
    pub fn batch(
        &mut self,
        event: &Event,
        action: &'static str,
        batch: BatchId,
        command: Option<String>,
        detail: String,
    ) {
        let id = match action {
            // One entry per batch request, keyed like a job's by its id.
            "batch_exec" => batch.as_uuid(),
            _ => event.id,
        };
        self.push(
            event,
            Entry {
                id,
                action,
                device_id: None,
                job_id: None,
                command,
                outcome: "accepted",
                detail: Some(detail),
                exec: None,
                batch: Some(batch.as_uuid()),
            },
        );
    }

    pub fn exec_rejected(&mut self, event: &Event, e: &ExecRejected) {
        self.push(
            event,
            Entry {
                id: event.id,
                action: "exec",
                device_id: e.device_id.map(|d| d.as_uuid()),
                job_id: None,
                command: Some(e.command.clone()),
                outcome: "rejected",
                detail: Some(e.reason.clone()),
                exec: None,
                batch: None,
            },
        );
    }

    pub fn cancel_requested(&mut self, event: &Event, e: &ExecCancelRequested) {
        self.push(
            event,
            Entry {
                id: event.id,
                action: "exec_cancel",
                device_id: None,
                job_id: Some(e.job_id.as_uuid()),
                command: None,
                outcome: "requested",
                detail: None,
                exec: None,
                batch: None,
            },
        );
    }

    pub fn device_configured(&mut self, event: &Event, action: &'static str, e: &DeviceConfig) {
        let detail = format!(
            "{} at {}@{}:{} ({}, tags: {})",
            e.name,
            e.target.username,
            e.target.host,
            e.target.port,
            e.status.as_str(),
            e.tags.join(",")
        );
        self.admin(event, action, Some(e.device_id.as_uuid()), detail);
    }

    /// An administrative action: keys, devices, tenants.
    pub fn admin(
        &mut self,
        event: &Event,
        action: &'static str,
        device_id: Option<Uuid>,
        detail: String,
    ) {
        self.push(
            event,
            Entry {
                id: event.id,
                action,
                device_id,
                job_id: None,
                command: None,
                outcome: "ok",
                detail: Some(detail),
                exec: None,
                batch: None,
            },
        );
    }

    /// Creates the partitions the rows need and inserts them all.
    pub async fn flush(self, tx: &mut Transaction<'_, Postgres>) -> sqlx::Result<()> {
        if self.id.is_empty() {
            return Ok(());
        }
        PARTITIONS.ensure_for(tx, &self.at).await?;
        let action: Vec<String> = self.action.iter().map(|s| s.to_string()).collect();
        let outcome: Vec<String> = self.outcome.iter().map(|s| s.to_string()).collect();
        sqlx::query(
            "INSERT INTO audit_entries (at, id, tenant, actor, action, device_id, job_id, command, outcome, detail,
                 env_keys, pty_term, pty_cols, pty_rows, stdin_bytes, batch_id)
             SELECT r.at, r.id, r.tenant, r.actor, r.action, r.device_id, r.job_id, r.command, r.outcome, r.detail,
                    CASE WHEN r.env_keys IS NULL THEN NULL
                         ELSE ARRAY(SELECT jsonb_array_elements_text(r.env_keys)) END,
                    r.pty_term, r.pty_cols, r.pty_rows, r.stdin_bytes, r.batch_id
             FROM UNNEST($1::timestamptz[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::uuid[],
                         $7::uuid[], $8::text[], $9::text[], $10::text[], $11::jsonb[], $12::text[],
                         $13::int[], $14::int[], $15::int[], $16::uuid[])
                  AS r(at, id, tenant, actor, action, device_id, job_id, command, outcome, detail,
                       env_keys, pty_term, pty_cols, pty_rows, stdin_bytes, batch_id)
             ON CONFLICT DO NOTHING",
        )
        .bind(&self.at)
        .bind(&self.id)
        .bind(&self.tenant)
        .bind(&self.actor)
        .bind(&action)
        .bind(&self.device_id)
        .bind(&self.job_id)
        .bind(&self.command)
        .bind(&outcome)
        .bind(&self.detail)
        .bind(&self.env_keys)
        .bind(&self.pty_term)
        .bind(&self.pty_cols)
        .bind(&self.pty_rows)
        .bind(&self.stdin_bytes)
        .bind(&self.batch_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// Copies concluded jobs' outcomes and the head of their output into their audit entries.
pub(crate) async fn exec_concluded(
    tx: &mut Transaction<'_, Postgres>,
    jobs: &[Uuid],
) -> sqlx::Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE audit_entries a SET outcome = j.status, exit_status = j.exit_status,
             detail = COALESCE(j.error_message, j.exit_signal),
             stdout = substring(j.stdout from 1 for $2), stderr = substring(j.stderr from 1 for $2),
             output_truncated = octet_length(j.stdout) > $2 OR octet_length(j.stderr) > $2
                 OR j.stdout_truncated OR j.stderr_truncated
         FROM jobs j
         WHERE j.id = ANY($1) AND a.id = j.id AND a.at = j.requested_at",
    )
    .bind(jobs)
    .bind(AUDIT_OUTPUT_BYTES)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// argv as a person would type it: words with anything unusual are single-quoted.
pub fn display_command(argv: &[String]) -> String {
    argv.iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_display_as_typed() {
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(display_command(&argv(&["df", "-h"])), "df -h");
        assert_eq!(
            display_command(&argv(&["echo", "a b", "it's"])),
            "echo 'a b' 'it'\\''s'"
        );
    }
}
