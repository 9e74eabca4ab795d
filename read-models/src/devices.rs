//! Devices: one device, pages of a tenant's devices, and the devices gone silent.

use chrono::{DateTime, Utc};
use schemas::{DeviceId, DevicePresence, TenantId};
use sqlx::{PgExecutor, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeviceRecord {
    pub id: Uuid,
    pub tenant: String,
    pub name: String,
    pub host: String,
    pub port: i32,
    pub username: String,
    pub host_key: String,
    pub registered_by: Option<String>,
    pub registered_at: DateTime<Utc>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub tags: Vec<String>,
    pub status: String,
    #[sqlx(try_from = "String")]
    pub presence: DevicePresence,
    pub updated_at: Option<DateTime<Utc>>,
    /// Usernames exec requests may ask for besides `username`.
    pub allowed_usernames: Vec<String>,
}

/// One device of one tenant; another tenant's device is simply not found.
pub async fn get(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    id: DeviceId,
) -> sqlx::Result<Option<DeviceRecord>> {
    sqlx::query_as("SELECT * FROM devices WHERE id = $1 AND tenant = $2")
        .bind(id.as_uuid())
        .bind(tenant.as_str())
        .fetch_optional(db)
        .await
}

/// Online devices (of every tenant) last seen before `before`: candidates to go offline.
pub async fn silent_since(db: &PgPool, before: DateTime<Utc>) -> sqlx::Result<Vec<(String, Uuid)>> {
    sqlx::query_as("SELECT tenant, id FROM devices WHERE presence = 'online' AND last_seen_at < $1")
        .bind(before)
        .fetch_all(db)
        .await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSort {
    Name,
    RegisteredAt,
    LastSeenAt,
}

impl DeviceSort {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "name" => DeviceSort::Name,
            "registered_at" | "created_at" => DeviceSort::RegisteredAt,
            "last_seen_at" | "last_seen" => DeviceSort::LastSeenAt,
            _ => return None,
        })
    }

    fn column(self) -> &'static str {
        match self {
            DeviceSort::Name => "name",
            DeviceSort::RegisteredAt => "registered_at",
            DeviceSort::LastSeenAt => "last_seen_at",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    /// Devices carrying every one of these tags.
    pub tags: Vec<String>,
    pub status: Option<String>,
    pub online: Option<bool>,
    /// Case-insensitive substring of the name.
    pub name: Option<String>,
}

/// One page of a tenant's devices, with the total count.
pub async fn list(
    db: &PgPool,
    tenant: &TenantId,
    filter: &DeviceFilter,
    sort: DeviceSort,
    page: &crate::Page,
) -> sqlx::Result<(Vec<DeviceRecord>, i64)> {
    let push_filters = |q: &mut QueryBuilder<Postgres>| {
        q.push(" WHERE tenant = ").push_bind(tenant.to_string());
        if !filter.tags.is_empty() {
            q.push(" AND tags @> ").push_bind(filter.tags.clone());
        }
        if let Some(status) = &filter.status {
            q.push(" AND status = ").push_bind(status.clone());
        }
        match filter.online {
            Some(true) => {
                q.push(" AND presence = 'online'");
            }
            Some(false) => {
                q.push(" AND presence <> 'online'");
            }
            None => {}
        }
        if let Some(name) = &filter.name {
            let pattern = format!(
                "%{}%",
                name.replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            );
            q.push(" AND name ILIKE ").push_bind(pattern);
        }
    };
    page.fetch(
        &mut *db.acquire().await?,
        "devices",
        "*",
        sort.column(),
        push_filters,
    )
    .await
}

/// A tenant's devices whose `host` (case-insensitive) or `name` is `host`, on `port` if one is
/// given: how a drop-in request that names a host (PrivX's `hostname`, Zato's `host`) finds the
/// registered device it means. At most `limit`, by name.
pub async fn by_host(
    db: &PgPool,
    tenant: &TenantId,
    host: &str,
    port: Option<u16>,
    limit: i64,
) -> sqlx::Result<Vec<DeviceRecord>> {
    sqlx::query_as(
        "SELECT * FROM devices WHERE tenant = $1 AND (lower(host) = lower($2) OR name = $2)
         AND ($3::int IS NULL OR port = $3) ORDER BY name, id LIMIT $4",
    )
    .bind(tenant.as_str())
    .bind(host)
    .bind(port.map(i32::from))
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A tenant's devices carrying `tag`, by name, at most `limit`.
pub async fn tagged(
    db: &PgPool,
    tenant: &TenantId,
    tag: &str,
    limit: i64,
) -> sqlx::Result<Vec<DeviceRecord>> {
    sqlx::query_as(
        "SELECT * FROM devices WHERE tenant = $1 AND tags @> ARRAY[$2]::text[] ORDER BY name, id LIMIT $3",
    )
    .bind(tenant.as_str())
    .bind(tag)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The names of the tenant's devices among `ids` (one query for a page of jobs or sessions);
/// an id that is not (or no longer) a device of the tenant is simply absent.
pub async fn names(
    db: &PgPool,
    tenant: &TenantId,
    ids: &[Uuid],
) -> sqlx::Result<std::collections::HashMap<Uuid, String>> {
    if ids.is_empty() {
        return Ok(std::collections::HashMap::new());
    }
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, name FROM devices WHERE tenant = $1 AND id = ANY($2)")
            .bind(tenant.as_str())
            .bind(ids)
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().collect())
}
