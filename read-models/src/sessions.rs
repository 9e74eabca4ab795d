//! Sessions and their recordings: pages of a tenant's sessions, one session, its frames.

use chrono::{DateTime, Utc};
use schemas::TenantId;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRecord {
    pub tenant: String,
    pub id: Uuid,
    pub device_id: Uuid,
    pub job_id: Option<Uuid>,
    pub actor: Option<String>,
    pub username: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub term: Option<String>,
    pub cols: i32,
    pub rows: i32,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub recorded: bool,
    pub input_recorded: bool,
    pub bytes: i64,
    pub truncated: bool,
    pub end_reason: Option<String>,
    pub exit_status: Option<i64>,
    pub worker: String,
    /// When the recording expires (the tenant's retention at the start); `None`: recorded
    /// before per-tenant retention.
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub device_id: Option<Uuid>,
    /// `exec` or `shell`.
    pub kind: Option<String>,
    pub active: Option<bool>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// One recorded frame, in recording order.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FrameRecord {
    pub at: DateTime<Utc>,
    pub offset_us: i64,
    /// `o`, `e`, `i`, `r` or `m` (see `schemas::FrameKind`).
    pub kind: String,
    pub data: Vec<u8>,
}

/// A session of the tenant that has not expired: started after `visible_after` (now minus the
/// tenant's current recording retention) and before its own `expires_at`. Expired sessions
/// are never served, whether or not the projector's sweep has deleted them yet.
pub async fn get(
    db: &PgPool,
    tenant: &TenantId,
    id: Uuid,
    visible_after: DateTime<Utc>,
) -> sqlx::Result<Option<SessionRecord>> {
    sqlx::query_as(
        "SELECT * FROM sessions WHERE tenant = $1 AND id = $2 AND started_at > $3
             AND (expires_at IS NULL OR expires_at > now())",
    )
    .bind(tenant.to_string())
    .bind(id)
    .bind(visible_after)
    .fetch_optional(db)
    .await
}

/// One page of a tenant's sessions, newest first unless `ascending`, with the total count.
/// Expired sessions are left out as in [`get`].
pub async fn list(
    db: &PgPool,
    tenant: &TenantId,
    filter: &SessionFilter,
    page: &crate::Page,
    visible_after: DateTime<Utc>,
) -> sqlx::Result<(Vec<SessionRecord>, i64)> {
    let push_filters = |q: &mut QueryBuilder<Postgres>| {
        q.push(" WHERE tenant = ").push_bind(tenant.to_string());
        q.push(" AND started_at > ").push_bind(visible_after);
        q.push(" AND (expires_at IS NULL OR expires_at > now())");
        if let Some(device) = filter.device_id {
            q.push(" AND device_id = ").push_bind(device);
        }
        if let Some(kind) = &filter.kind {
            q.push(" AND type = ").push_bind(kind.clone());
        }
        match filter.active {
            Some(true) => {
                q.push(" AND ended_at IS NULL");
            }
            Some(false) => {
                q.push(" AND ended_at IS NOT NULL");
            }
            None => {}
        }
        if let Some(from) = filter.from {
            q.push(" AND started_at >= ").push_bind(from);
        }
        if let Some(to) = filter.to {
            q.push(" AND started_at < ").push_bind(to);
        }
    };
    page.fetch(
        &mut *db.acquire().await?,
        "sessions",
        "*",
        "started_at",
        push_filters,
    )
    .await
}

/// A session's frames in recording order (batch, then position in the batch).
pub async fn frames(
    db: &PgPool,
    tenant: &TenantId,
    session: Uuid,
) -> sqlx::Result<Vec<FrameRecord>> {
    sqlx::query_as(
        "SELECT at, offset_us, kind, data FROM session_frames
         WHERE tenant = $1 AND session_id = $2 ORDER BY batch, idx",
    )
    .bind(tenant.to_string())
    .bind(session)
    .fetch_all(db)
    .await
}
