//! The audit trail: pages of a tenant's entries.

use chrono::{DateTime, Utc};
use schemas::TenantId;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRecord {
    pub at: DateTime<Utc>,
    pub id: Uuid,
    pub tenant: String,
    pub actor: Option<String>,
    pub action: String,
    pub device_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub command: Option<String>,
    pub outcome: String,
    pub exit_status: Option<i64>,
    pub detail: Option<String>,
    pub stdout: Option<Vec<u8>>,
    pub stderr: Option<Vec<u8>>,
    pub output_truncated: bool,
    /// Exec requests: the names of the environment variables set (never their values).
    pub env_keys: Option<Vec<String>>,
    /// Exec requests under a pseudo-terminal: its `TERM` and size.
    pub pty_term: Option<String>,
    pub pty_cols: Option<i32>,
    pub pty_rows: Option<i32>,
    /// Exec requests: how many bytes of stdin were sent (never the bytes).
    pub stdin_bytes: Option<i32>,
    /// Exec requests whose template is sensitive: the output is for roles that may see
    /// secrets only (the API redacts it for the others).
    pub sensitive: bool,
    /// The fan-out batch the entry is about (a batch, or one of its jobs).
    pub batch_id: Option<Uuid>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub device_id: Option<Uuid>,
    pub actor: Option<String>,
    pub outcome: Option<String>,
    pub action: Option<String>,
}

/// One page of a tenant's audit trail, newest first unless `ascending`, with the total count.
pub async fn list(
    db: &PgPool,
    tenant: &TenantId,
    filter: &AuditFilter,
    page: &crate::Page,
) -> sqlx::Result<(Vec<AuditRecord>, i64)> {
    let push_filters = |q: &mut QueryBuilder<Postgres>| {
        q.push(" WHERE tenant = ").push_bind(tenant.to_string());
        if let Some(from) = filter.from {
            q.push(" AND at >= ").push_bind(from);
        }
        if let Some(to) = filter.to {
            q.push(" AND at < ").push_bind(to);
        }
        if let Some(device) = filter.device_id {
            q.push(" AND device_id = ").push_bind(device);
        }
        if let Some(actor) = &filter.actor {
            q.push(" AND actor = ").push_bind(actor.clone());
        }
        if let Some(outcome) = &filter.outcome {
            q.push(" AND outcome = ").push_bind(outcome.clone());
        }
        if let Some(action) = &filter.action {
            q.push(" AND action = ").push_bind(action.clone());
        }
    };
    page.fetch(
        &mut *db.acquire().await?,
        "audit_entries",
        "*",
        "at",
        push_filters,
    )
    .await
}
