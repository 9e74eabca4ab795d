//! The devices read model: one row per registered device, with when it was last seen.

use chrono::{DateTime, Utc};
use schemas::{DeviceId, DeviceOnline, DeviceRegistered, Event, TenantId};
use sqlx::{PgExecutor, Postgres, Transaction};
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
}

pub(crate) async fn registered(
    tx: &mut Transaction<'_, Postgres>,
    event: &Event,
    e: &DeviceRegistered,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO devices (id, tenant, name, host, port, username, host_key, registered_by, registered_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, host = EXCLUDED.host, port = EXCLUDED.port,
             username = EXCLUDED.username, host_key = EXCLUDED.host_key",
    )
    .bind(e.device_id.as_uuid())
    .bind(event.tenant.as_str())
    .bind(&e.name)
    .bind(&e.target.host)
    .bind(i32::from(e.target.port))
    .bind(&e.target.username)
    .bind(&e.target.host_key)
    .bind(event.actor.as_ref().map(|a| a.0.as_str()))
    .bind(event.at.to_datetime())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn online(
    tx: &mut Transaction<'_, Postgres>,
    event: &Event,
    e: &DeviceOnline,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE devices SET last_seen_at = GREATEST(last_seen_at, $3) WHERE id = $1 AND tenant = $2")
        .bind(e.device_id.as_uuid())
        .bind(event.tenant.as_str())
        .bind(event.at.to_datetime())
        .execute(&mut **tx)
        .await?;
    Ok(())
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
