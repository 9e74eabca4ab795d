//! API keys as a read model: for listing, never for authentication (the API authenticates
//! against the log).

use chrono::{DateTime, Utc};
use schemas::TenantId;
use sqlx::PgPool;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRecord {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub role: String,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A tenant's keys, newest first, with the total count.
pub async fn list(
    db: &PgPool,
    tenant: &TenantId,
    page: &crate::Page,
) -> sqlx::Result<(Vec<KeyRecord>, i64)> {
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE tenant = $1")
        .bind(tenant.as_str())
        .fetch_one(db)
        .await?;
    let order = if page.ascending { "ASC" } else { "DESC" };
    let sql = format!(
        "SELECT * FROM api_keys WHERE tenant = $1 ORDER BY created_at {order}, id {order} LIMIT $2 OFFSET $3"
    );
    let keys = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(tenant.as_str())
        .bind(page.per_page)
        .bind(page.offset())
        .fetch_all(db)
        .await?;
    Ok((keys, total))
}
