//! The sessions read model and the replay read model (recording frames).
//!
//! `sessions` holds one row per SSH channel (from `SessionStarted`, closed by `SessionEnded`,
//! or by the job's outcome when the worker that held the channel vanished); `session_frames`
//! holds the recordings, one row per frame, in daily partitions dropped whole after the job
//! retention — the period the session events themselves stay in the log, so a rebuild gives
//! what the live read models hold after retention ran.
//!
//! Per-tenant recording retention is finer: a session expires at its `expires_at` (its start
//! plus the tenant's retention then; all its events leave the log at that moment by their
//! `Nats-TTL`), capped when the tenant shortens its retention later (in log order, so a
//! rebuild caps the same sessions). The fold never writes a session or frames past their
//! own `expires_at`, and [`sweep_expired`] deletes what expired since; a rebuild runs the
//! sweep once caught up, so it gives what the live read models hold after the sweep.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use schemas::{Event, EventBody, ExecFailed, SessionFrames};
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};

use crate::partitions::DailyPartitions;
use uuid::Uuid;

/// The recordings' daily partitions.
const PARTITIONS: DailyPartitions = DailyPartitions("session_frames");

/// The recording partitions that exist, oldest first.
pub async fn partitions(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<NaiveDate>> {
    PARTITIONS.list(db).await
}

/// What one round of session retention removed.
#[derive(Debug, Default)]
pub struct Removed {
    pub sessions: u64,
    pub frame_partitions: Vec<NaiveDate>,
}

/// Creates recording partitions for the next week, drops those wholly older than
/// `now - retention`, and deletes sessions started before it.
pub async fn enforce_retention(
    pool: &PgPool,
    now: DateTime<Utc>,
    retention: Duration,
) -> sqlx::Result<Removed> {
    let mut tx = pool.begin().await?;
    let mut removed = Removed {
        frame_partitions: PARTITIONS.maintain(&mut tx, now, retention).await?,
        ..Default::default()
    };
    // Frames of the partition holding the horizon that are older than it.
    sqlx::query("DELETE FROM session_frames WHERE at < $1")
        .bind(now - retention)
        .execute(&mut *tx)
        .await?;
    removed.sessions = sqlx::query("DELETE FROM sessions WHERE started_at < $1")
        .bind(now - retention)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(removed)
}

/// Deletes the sessions (and their frames) that expired by `now`: past their `expires_at`,
/// which is the tenant's retention from the start, capped when the tenant shortened it
/// since (see [`SessionRows::apply`]). Returns how many sessions went.
pub async fn sweep_expired(pool: &PgPool, now: DateTime<Utc>) -> sqlx::Result<u64> {
    let mut tx = pool.begin().await?;
    let (tenants, ids): (Vec<String>, Vec<Uuid>) = sqlx::query_as::<_, (String, Uuid)>(
        "DELETE FROM sessions WHERE expires_at <= $1 RETURNING tenant, id",
    )
    .bind(now)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .unzip();
    if !ids.is_empty() {
        sqlx::query(
            "DELETE FROM session_frames f USING UNNEST($1::text[], $2::uuid[]) AS g(tenant, id)
             WHERE f.tenant = g.tenant AND f.session_id = g.id",
        )
        .bind(&tenants)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(ids.len() as u64)
}

/// A batch's session events: starts and ends in log order, frames as one insert.
#[derive(Default)]
pub(crate) struct SessionRows {
    /// `SessionStarted` and `SessionEnded`, in log order.
    lifecycle: Vec<Event>,
    at: Vec<DateTime<Utc>>,
    tenant: Vec<String>,
    session: Vec<Uuid>,
    batch: Vec<i32>,
    idx: Vec<i32>,
    offset_us: Vec<i64>,
    kind: Vec<&'static str>,
    data: Vec<Vec<u8>>,
}

impl SessionRows {
    pub fn lifecycle(&mut self, event: Event) {
        self.lifecycle.push(event);
    }

    pub fn frames(&mut self, event: &Event, frames: &SessionFrames) {
        let at = event.at.to_datetime();
        for (i, frame) in frames.frames.iter().enumerate() {
            self.at.push(at);
            self.tenant.push(event.tenant.to_string());
            self.session.push(frames.session_id.as_uuid());
            self.batch.push(frames.batch as i32);
            self.idx.push(i as i32);
            self.offset_us
                .push(frame.offset_us.min(i64::MAX as u64) as i64);
            self.kind.push(frame.kind.as_str());
            self.data.push(frame.data.clone());
        }
    }

    /// Applies starts, then frames (counting their bytes on the session), then ends: the
    /// order these can occur in for one session, so the result is the log order's. Frames are
    /// written only for a session the read model holds: one swept because its tenant shortened
    /// the retention below its age while it ran (or aged out) takes no more frames, so no
    /// frame outlives its session and a rebuild (which sweeps once caught up) agrees.
    pub async fn apply(
        self,
        tx: &mut Transaction<'_, Postgres>,
        failed: &[(DateTime<Utc>, ExecFailed)],
    ) -> sqlx::Result<()> {
        for event in &self.lifecycle {
            // A tenant that shortens its recording retention shortens its sessions' lives:
            // each expires at the latest at its start plus the new retention (lengthening
            // extends nothing). Applied in log order among the starts, so a rebuild caps
            // exactly the sessions the live read model capped.
            if let EventBody::TenantSettingsChanged(settings) = &event.body
                && let Some(retention) = settings.recording_retention_s
            {
                sqlx::query(
                    "UPDATE sessions SET expires_at = LEAST(COALESCE(expires_at, 'infinity'),
                         started_at + make_interval(secs => $2))
                     WHERE tenant = $1
                       AND COALESCE(expires_at, 'infinity') > started_at + make_interval(secs => $2)",
                )
                .bind(event.tenant.to_string())
                .bind(retention.min(i64::MAX as u64 / 2) as f64)
                .execute(&mut **tx)
                .await?;
            }
            if let EventBody::SessionStarted(e) = &event.body {
                sqlx::query(
                    "INSERT INTO sessions (tenant, id, device_id, job_id, actor, username, type, term,
                         cols, rows, started_at, recorded, input_recorded, worker, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                     ON CONFLICT (tenant, id) DO NOTHING",
                )
                .bind(event.tenant.to_string())
                .bind(e.session_id.as_uuid())
                .bind(e.device_id.as_uuid())
                .bind(e.job_id.map(|j| j.as_uuid()))
                .bind(event.actor.as_ref().map(|k| k.to_string()))
                .bind(&e.username)
                .bind(e.kind.as_str())
                .bind(&e.term)
                .bind(e.cols.min(i32::MAX as u32) as i32)
                .bind(e.rows.min(i32::MAX as u32) as i32)
                .bind(event.at.to_datetime())
                .bind(e.recorded)
                .bind(e.input_recorded)
                .bind(&e.worker)
                .bind(e.expires_at.map(|t| t.to_datetime()))
                .execute(&mut **tx)
                .await?;
            }
        }
        if !self.at.is_empty() {
            PARTITIONS.ensure_for(tx, &self.at).await?;
            let kind: Vec<String> = self.kind.iter().map(|s| s.to_string()).collect();
            sqlx::query(
                "WITH f AS (
                     INSERT INTO session_frames (at, tenant, session_id, batch, idx, offset_us, kind, data)
                     SELECT u.* FROM UNNEST($1::timestamptz[], $2::text[], $3::uuid[], $4::int[],
                                          $5::int[], $6::bigint[], $7::text[], $8::bytea[])
                         AS u(at, tenant, session_id, batch, idx, offset_us, kind, data)
                     WHERE EXISTS (SELECT 1 FROM sessions s
                                   WHERE s.tenant = u.tenant AND s.id = u.session_id)
                     ON CONFLICT DO NOTHING
                     RETURNING tenant, session_id, octet_length(data) AS n)
                 UPDATE sessions s SET bytes = s.bytes + t.n
                 FROM (SELECT tenant, session_id, sum(n) AS n FROM f GROUP BY 1, 2) t
                 WHERE s.tenant = t.tenant AND s.id = t.session_id",
            )
            .bind(&self.at)
            .bind(&self.tenant)
            .bind(&self.session)
            .bind(&self.batch)
            .bind(&self.idx)
            .bind(&self.offset_us)
            .bind(&kind)
            .bind(&self.data)
            .execute(&mut **tx)
            .await?;
        }
        for event in &self.lifecycle {
            if let EventBody::SessionEnded(e) = &event.body {
                sqlx::query(
                    "UPDATE sessions SET ended_at = $3, bytes = $4, truncated = $5,
                         end_reason = $6, exit_status = $7
                     WHERE tenant = $1 AND id = $2 AND ended_at IS NULL",
                )
                .bind(event.tenant.to_string())
                .bind(e.session_id.as_uuid())
                .bind(event.at.to_datetime())
                .bind(e.recorded_bytes.min(i64::MAX as u64) as i64)
                .bind(e.truncated)
                .bind(&e.reason)
                .bind(e.exit_status.map(i64::from))
                .execute(&mut **tx)
                .await?;
            }
            if let EventBody::SessionLost(e) = &event.body {
                sqlx::query(
                    "UPDATE sessions SET ended_at = $3, end_reason = $4
                     WHERE tenant = $1 AND id = $2 AND ended_at IS NULL",
                )
                .bind(event.tenant.to_string())
                .bind(e.session_id.as_uuid())
                .bind(event.at.to_datetime())
                .bind(&e.reason)
                .execute(&mut **tx)
                .await?;
            }
        }
        // A job that failed while its session is still open lost its worker (a worker that
        // is alive ends the session before it publishes the outcome): the session ends with
        // the job's reason, so it is never shown as live for ever.
        if !failed.is_empty() {
            let at: Vec<DateTime<Utc>> = failed.iter().map(|(at, _)| *at).collect();
            let job: Vec<Uuid> = failed.iter().map(|(_, f)| f.job_id.as_uuid()).collect();
            let reason: Vec<String> = failed.iter().map(|(_, f)| f.message.clone()).collect();
            sqlx::query(
                "UPDATE sessions s SET ended_at = f.at, end_reason = f.reason
                 FROM UNNEST($1::timestamptz[], $2::uuid[], $3::text[]) AS f(at, job, reason)
                 WHERE s.job_id = f.job AND s.ended_at IS NULL",
            )
            .bind(&at)
            .bind(&job)
            .bind(&reason)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}
