//! API keys and tenants as read models: for listing and auditing, never for authentication
//! (the API authenticates against the log, so a key works the moment it is created and stops
//! the moment it is revoked, whatever the projector's lag).

use schemas::{ApiKeyCreated, ApiKeyRevoked, Event, TenantCreated};
use sqlx::{Postgres, Transaction};

pub(crate) async fn created(
    tx: &mut Transaction<'_, Postgres>,
    event: &Event,
    e: &ApiKeyCreated,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, tenant, name, role, created_by, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&e.key_id.0)
    .bind(event.tenant.as_str())
    .bind(&e.name)
    .bind(e.role.as_str())
    .bind(event.actor.as_ref().map(|a| a.0.as_str()))
    .bind(event.at.to_datetime())
    .bind(e.expires_at.map(|t| t.to_datetime()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn revoked(
    tx: &mut Transaction<'_, Postgres>,
    event: &Event,
    e: &ApiKeyRevoked,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) WHERE id = $1 AND tenant = $2",
    )
    .bind(&e.key_id.0)
    .bind(event.tenant.as_str())
    .bind(event.at.to_datetime())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn tenant_created(
    tx: &mut Transaction<'_, Postgres>,
    event: &Event,
    e: &TenantCreated,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO tenants (id, name, created_by, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING")
        .bind(event.tenant.as_str())
        .bind(&e.name)
        .bind(event.actor.as_ref().map(|a| a.0.as_str()))
        .bind(event.at.to_datetime())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
