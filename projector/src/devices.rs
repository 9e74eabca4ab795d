//! The devices read model: configuration, state, tags and heartbeat presence. Readers use
//! `read_models::devices`.

use schemas::{DeviceConfig, DeviceDeleted, DeviceOffline, DeviceOnline, Event};
use sqlx::{Postgres, Transaction};

pub(crate) async fn configured(
    tx: &mut Transaction<'_, Postgres>,
    event: &Event,
    e: &DeviceConfig,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO devices (id, tenant, name, host, port, username, host_key, registered_by, registered_at, tags, status, allowed_usernames)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, host = EXCLUDED.host, port = EXCLUDED.port,
             username = EXCLUDED.username, host_key = EXCLUDED.host_key, tags = EXCLUDED.tags,
             status = EXCLUDED.status, updated_at = EXCLUDED.registered_at,
             allowed_usernames = EXCLUDED.allowed_usernames",
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
    .bind(&e.tags)
    .bind(e.status.as_str())
    .bind(&e.allowed_usernames)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn deleted(
    tx: &mut Transaction<'_, Postgres>,
    event: &Event,
    e: &DeviceDeleted,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM devices WHERE id = $1 AND tenant = $2")
        .bind(e.device_id.as_uuid())
        .bind(event.tenant.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(crate) async fn online(
    tx: &mut Transaction<'_, Postgres>,
    event: &Event,
    e: &DeviceOnline,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE devices SET last_seen_at = GREATEST(last_seen_at, $3), presence = 'online'
         WHERE id = $1 AND tenant = $2",
    )
    .bind(e.device_id.as_uuid())
    .bind(event.tenant.as_str())
    .bind(event.at.to_datetime())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn offline(
    tx: &mut Transaction<'_, Postgres>,
    event: &Event,
    e: &DeviceOffline,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE devices SET presence = 'offline' WHERE id = $1 AND tenant = $2")
        .bind(e.device_id.as_uuid())
        .bind(event.tenant.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
